"""Tests for simlib.data: readers, filters, split, registry, and one pass over the real sample.

No test touches the network: an autouse fixture replaces pooch's HTTP downloader with a fake
that records its calls and fails.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pooch
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simlib.data import (
    COLUMNS,
    FILTER_ORDER,
    DataFormatError,
    DataHashError,
    DataNotFoundError,
    apply_filters,
    load_posts,
    posts_table,
    prepare,
    read_crawler,
    read_pushshift,
    split_by_post,
)
from simlib.data import filters as F
from simlib.data import registry as R
from simlib.data.schema import to_frame
from simlib.data.split import split_sizes
from simlib.text import truncate_post

REPO = Path(__file__).resolve().parents[1]


def _real_data_dir() -> Path:
    return Path(os.environ.get("SIMLIB_DATA_DIR") or REPO.parent / "shared" / "data")


REAL_CRAWLER = _real_data_dir() / R.CRAWLER_SUBDIR
needs_real = pytest.mark.skipif(not (REAL_CRAWLER / "MANIFEST.tsv").is_file(), reason="real sample absent")


# ---------------------------------------------------------------------------------------------
# fixtures and builders


@pytest.fixture(autouse=True)
def data_no_network(monkeypatch):
    """Replace pooch's HTTP downloader; the list records every download attempted."""
    calls: list[str] = []

    def fake(self, url, output_file, pup, check_only=False):
        calls.append(url)
        raise ConnectionError(f"network disabled in tests: {url}")

    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", fake)
    for var in ("SIMLIB_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return calls


def thread(post_id, created, comments, title="AITA for testing?", selftext="Story.", sub="AITAH"):
    """A crawler thread dict; comments are (comment_id, message, created_utc)."""
    return {
        "submission_id": post_id,
        "title": title,
        "selftext": selftext,
        "created_utc": created,
        "permalink": f"/r/{sub}/comments/{post_id}/slug/",
        "score": 7,
        "url": f"https://www.reddit.com/r/{sub}/comments/{post_id}/slug/",
        "comments": [
            {"comment_id": c, "message": m, "created_utc": t, "score": 1, "submission_id": post_id}
            for c, m, t in comments
        ],
    }


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False), encoding="utf-8")
    return path


def write_ndjson(path: Path, records, raw_lines: dict[int, bytes] | None = None, long_window=False) -> Path:
    """NDJSON file (``.zst`` -> zstandard-compressed); ``raw_lines`` replaces 1-based lines by raw bytes.

    ``long_window`` writes a streamed frame with a 256 MiB window, like Arctic-Shift's ``--long``
    dumps, which zstd refuses to decode under its default window limit.
    """
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in records]
    for lineno, raw in (raw_lines or {}).items():
        lines[lineno - 1] = raw
    data = b"\n".join(lines) + b"\n"
    if path.suffix == ".zst" and long_window:
        params = zstandard.ZstdCompressionParameters.from_level(3, window_log=28, enable_ldm=True)
        with open(path, "wb") as fh, zstandard.ZstdCompressor(compression_params=params).stream_writer(fh) as w:
            w.write(data)
        return path
    if path.suffix == ".zst":
        data = zstandard.ZstdCompressor(level=3).compress(data)
    path.write_bytes(data)
    return path


def row(**kw) -> dict:
    base = {
        "post_id": "p1", "subreddit": "AITAH", "title": "AITA for x?", "body": "story",
        "post_created_utc": 100, "response_id": "c1", "response_text": "NTA, you are fine",
        "response_created_utc": 200, "source_file": "mem",
    }
    return {**base, **kw}


SUBMISSIONS = [
    {"id": "a1", "subreddit": "AITAH", "title": "AITA for A?", "selftext": "Story A", "created_utc": 1000,
     "author": "op_a", "score": 300, "stickied": False, "distinguished": None},
    {"id": "b2", "subreddit": "AITAH", "title": "AITA for B?", "selftext": "", "created_utc": "2000",
     "author": "op_b", "score": 5},
]
COMMENTS = [
    {"id": "c1", "link_id": "t3_a1", "parent_id": "t3_a1", "body": "NTA", "created_utc": 1100,
     "author": "u1", "score": 1000},
    {"id": "c2", "link_id": "t3_a1", "parent_id": "t1_c1", "body": "a reply", "created_utc": 1200,
     "author": "u2", "score": 1},  # reply: dropped
    {"id": "c3", "link_id": "t3_b2", "parent_id": "t3_b2", "body": "YTA — clearly", "created_utc": 2100.0,
     "author": "u3", "score": -4, "stickied": True, "distinguished": "moderator"},
    {"id": "c4", "link_id": "t3_zz", "parent_id": "t3_zz", "body": "other post", "created_utc": 1,
     "author": "u4", "score": 1},  # post not in submissions: dropped
]


@pytest.fixture
def data_dump(tmp_path):
    """(submissions path, comments path) factory for plain or .zst dumps."""
    def make(ext="", subs=SUBMISSIONS, comments=COMMENTS, raw_lines=None):
        s = write_ndjson(tmp_path / f"RS_test.ndjson{ext}", subs)
        c = write_ndjson(tmp_path / f"RC_test.ndjson{ext}", comments, raw_lines)
        return s, c
    return make


# ---------------------------------------------------------------------------------------------
# readers


def test_crawler_reader_normalises(tmp_path):
    f1 = write_json(tmp_path / "aitah" / "p1.json", thread("p1", 100, [("c1", "NTA", 150), ("c2", "", 160)]))
    f2 = write_json(tmp_path / "ask" / "q1.json",
                    thread("q1", 50, [("d1", "Pizza", 60)], title="What?", selftext="", sub="AskReddit"))
    df = read_crawler([f1, f2, f1])  # f1 twice: its rows are not duplicated
    assert list(df.columns) == list(COLUMNS)
    assert dict(df.dtypes.astype(str)) == COLUMNS
    assert df["response_id"].tolist() == ["c1", "c2", "d1"]
    assert df["subreddit"].tolist() == ["AITAH", "AITAH", "AskReddit"]
    assert df.loc[0, "title"] == "AITA for testing?" and df.loc[2, "body"] == ""
    assert df["response_author"].isna().all() and df["source_line"].isna().all()
    assert df.loc[2, "source_file"] == str(f2)
    assert df["post_created_utc"].tolist() == [100, 100, 50]


def test_pushshift_reader_keeps_top_level_only(data_dump):
    df = read_pushshift(*data_dump())
    assert list(df.columns) == list(COLUMNS)
    assert df["response_id"].tolist() == ["c1", "c3"]
    assert df["post_id"].tolist() == ["a1", "b2"]
    assert df["response_author"].tolist() == ["u1", "u3"]
    assert df["post_created_utc"].tolist() == [1000, 2000]  # "2000" string coerced
    assert df["response_created_utc"].tolist() == [1100, 2100]
    assert df["response_score"].tolist() == [1000, -4]  # real scores, not mod 256
    assert df["source_line"].tolist() == [1, 3]
    assert df.loc[1, "response_stickied"] == True  # noqa: E712 (pandas boolean)
    assert df.attrs["read_stats"] == {"submissions": 2, "comments_read": 4, "replies_dropped": 1,
                                      "other_posts_dropped": 1, "duplicates_dropped": 0}


def test_pushshift_zst_matches_plain(data_dump):
    plain = read_pushshift(*data_dump())
    zst = read_pushshift(*data_dump(".zst"))
    assert zst["source_file"].str.endswith(".zst").all()
    cols = [c for c in COLUMNS if c != "source_file"]
    pd.testing.assert_frame_equal(plain[cols], zst[cols])


def test_pushshift_long_window_zst(tmp_path):
    s = write_ndjson(tmp_path / "RS.zst", SUBMISSIONS, long_window=True)
    c = write_ndjson(tmp_path / "RC.zst", COMMENTS, long_window=True)
    assert zstandard.get_frame_parameters(c.read_bytes()).window_size == 2**28
    assert read_pushshift(s, c)["response_id"].tolist() == ["c1", "c3"]


def test_pushshift_subreddit_restriction_case_insensitive(data_dump):
    subs = SUBMISSIONS + [{"id": "x9", "subreddit": "AskReddit", "title": "Q?", "created_utc": 5}]
    comments = COMMENTS + [{"id": "k9", "link_id": "t3_x9", "parent_id": "t3_x9", "body": "A", "created_utc": 6}]
    assert set(read_pushshift(*data_dump(subs=subs, comments=comments))["subreddit"]) == {"AITAH", "AskReddit"}
    df = read_pushshift(*data_dump(subs=subs, comments=comments), subreddits=["askreddit"])
    assert df["response_id"].tolist() == ["k9"]


def test_schema_identical_across_formats(tmp_path, data_dump):
    crawler = read_crawler([write_json(tmp_path / "t.json", thread("p1", 1, [("c", "x", 2)]))])
    pushshift = read_pushshift(*data_dump())
    assert crawler.dtypes.equals(pushshift.dtypes)


def test_malformed_crawler_json_names_file(tmp_path):
    good = write_json(tmp_path / "good.json", thread("p1", 1, [("c", "x", 2)]))
    bad = tmp_path / "broken_thread.json"
    bad.write_text('{"submission_id": "p2", "comments": [', encoding="utf-8")
    with pytest.raises(DataFormatError, match="broken_thread.json"):
        read_crawler([good, bad])


def test_crawler_missing_field_names_file(tmp_path):
    t = thread("p1", 1, [("c", "x", 2)])
    del t["comments"][0]["message"]
    bad = write_json(tmp_path / "nomsg.json", t)
    with pytest.raises(DataFormatError, match=r"nomsg\.json.*comments\[0\].*'message'"):
        read_crawler([bad])


def test_crawler_invalid_utf8_names_file(tmp_path):
    bad = tmp_path / "latin1.json"
    bad.write_bytes(json.dumps(thread("p1", 1, [("c", "caf@", 2)])).encode().replace(b"@", b"\xe9"))
    with pytest.raises(DataFormatError, match=r"latin1\.json: invalid UTF-8"):
        read_crawler([bad])


@pytest.mark.parametrize("ext", ["", ".zst"])
def test_bad_ndjson_line_names_file_and_line(data_dump, ext):
    with pytest.raises(DataFormatError, match=rf"RC_test\.ndjson{ext}:3: invalid JSON"):
        read_pushshift(*data_dump(ext, raw_lines={3: b'{"id": "c3", "body": '}))


@pytest.mark.parametrize("ext", ["", ".zst"])
def test_invalid_utf8_ndjson_names_file_and_line(data_dump, ext):
    raw = json.dumps(COMMENTS[1]).encode().replace(b"a reply", b"a r\xffply")
    with pytest.raises(DataFormatError, match=rf"RC_test\.ndjson{ext}:2: invalid UTF-8"):
        read_pushshift(*data_dump(ext, raw_lines={2: raw}))


def test_ndjson_non_object_and_missing_field(data_dump):
    with pytest.raises(DataFormatError, match=r"RC_test\.ndjson:4: expected a JSON object"):
        read_pushshift(*data_dump(raw_lines={4: b"[1, 2]"}))
    no_time = [dict(SUBMISSIONS[0]), SUBMISSIONS[1]]
    del no_time[0]["created_utc"]
    with pytest.raises(DataFormatError, match=r"RS_test\.ndjson:1: missing field 'created_utc'"):
        read_pushshift(*data_dump(subs=no_time))


def test_corrupt_zst_names_file(data_dump):
    s, c = data_dump(".zst")
    c.write_bytes(c.read_bytes()[:-8] + b"\x00" * 8)  # break the frame's checksum / data
    with pytest.raises(DataFormatError, match=r"RC_test\.ndjson\.zst"):
        read_pushshift(s, c)


texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    bodies=st.lists(texts, min_size=1, max_size=8),
    title=texts.filter(lambda t: t.strip() != ""),
    times=st.lists(st.integers(0, 2**40), min_size=8, max_size=8),
    ext=st.sampled_from(["", ".zst"]),
)
def test_ndjson_roundtrip_property(tmp_path, bodies, title, times, ext):
    subs = [{"id": "p1", "subreddit": "AITAH", "title": title, "selftext": "s", "created_utc": 1}]
    comments = [
        {"id": f"c{i}", "link_id": "t3_p1", "parent_id": "t3_p1", "body": b, "created_utc": times[i],
         "author": f"u{i}", "score": i - 3}
        for i, b in enumerate(bodies)
    ]
    s = write_ndjson(tmp_path / f"s.ndjson{ext}", subs)
    c = write_ndjson(tmp_path / f"c.ndjson{ext}", comments)
    df = read_pushshift(s, c)
    assert df["response_text"].tolist() == bodies
    assert df["response_created_utc"].tolist() == times[: len(bodies)]
    assert df["response_score"].tolist() == [i - 3 for i in range(len(bodies))]
    assert df["title"].tolist() == [title] * len(bodies)
    assert df["source_line"].tolist() == list(range(1, len(bodies) + 1))


# ---------------------------------------------------------------------------------------------
# filters: each one with a row it removes and a row it keeps


CASES = {
    # name: (filter call, row removed, row kept)
    "load_more_stubs": (F.load_more_stubs, row(response_text="  \n"), row(response_text=".")),
    "deleted": (F.deleted, row(response_text="[removed]"), row(response_text="[removed] by mods, sadly")),
    "bots_text": (F.bots, row(response_text="Tag notice\n*I am a bot, and this action was performed automatically.*"),
                  row(response_text="Are you a bot?")),
    "bots_author": (F.bots, row(response_author="AutoModerator", response_text="Rules"), row(response_author="auto_mod_fan")),
    "bots_stickied": (F.bots, row(response_stickied=True), row(response_stickied=False)),
    "mod_posts_id": (F.mod_posts, row(post_id="m6n71o", title="anything"), row(post_id="m6n71p")),
    "mod_posts_lounge": (F.mod_posts, row(title="r/AskReddit Lounge"), row(title="AITA for napping in the lounge")),
    "mod_posts_flags": (F.mod_posts, row(post_distinguished="moderator"), row(post_distinguished=None, post_stickied=False)),
    "deleted_posts": (F.deleted_posts, row(body="[deleted]"), row(body="")),
    "deleted_posts_title": (F.deleted_posts, row(title="[deleted by user]"), row(title="AITA for deleting?")),
    "min_chars": (lambda d: F.too_short(d, 4), row(response_text=" NTA "), row(response_text="NTA!")),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_filter_removes_and_keeps(name):
    func, removed, kept = CASES[name]
    df = to_frame([removed, {**kept, "response_id": "c2"}])
    assert func(df).tolist() == [True, False]


def test_post_level_filters_remove_all_responses_of_the_post():
    df = to_frame([row(post_id="m6n71o", response_id=f"c{i}") for i in range(3)] + [row(post_id="p2")])
    assert F.mod_posts(df).tolist() == [True, True, True, False]


def test_over_cap_keeps_earliest_then_id():
    df = to_frame([row(response_id="b", response_created_utc=5), row(response_id="z", response_created_utc=1),
                   row(response_id="a", response_created_utc=5), row(post_id="p2", response_id="q")])
    assert F.over_cap(df, 2).tolist() == [True, False, False, False]
    assert not F.over_cap(df, None).any()


def test_apply_filters_report_counts_in_order():
    rows = (
        [row(post_id="p1", response_id=f"a{i}", response_text=f"NTA reason {i}") for i in range(4)]
        + [row(post_id="p1", response_id="stub", response_text=""),
           row(post_id="p1", response_id="del", response_text="[deleted]"),
           row(post_id="p1", response_id="bot", response_text="I am a bot."),
           row(post_id="p1", response_id="short", response_text="ok")]
        + [row(post_id="m6n71o", title="r/AITAH Lounge", response_id=f"m{i}") for i in range(2)]
        + [row(post_id="gone", body="[removed]", response_id="g1")]
        + [row(post_id="p3", response_id=f"b{i}", response_text="YTA, sorry") for i in range(2)]
    )
    kept, report = apply_filters(to_frame(rows), min_chars=3, max_responses_per_post=3, min_responses_per_post=3)
    assert [r["filter"] for r in report] == list(FILTER_ORDER)
    removed = {r["filter"]: r["rows_removed"] for r in report}
    assert removed == {"load_more_stubs": 1, "deleted": 1, "bots": 1, "mod_posts": 2, "deleted_posts": 1,
                       "min_chars": 1, "max_responses_per_post": 1, "min_responses_per_post": 2}
    posts_removed = {r["filter"]: r["posts_removed"] for r in report}
    assert posts_removed["mod_posts"] == 1 and posts_removed["min_responses_per_post"] == 1
    assert report[-1]["rows_left"] == len(kept) == 3 and report[-1]["posts_left"] == 1
    assert kept["response_id"].tolist() == ["a0", "a1", "a2"]
    assert len(rows) == len(kept) + sum(removed.values())


def test_apply_filters_defaults_only_clean():
    df = to_frame([row(response_id="x", response_text="k"), row(response_id="y", response_text="")])
    kept, report = apply_filters(df)
    assert kept["response_id"].tolist() == ["x"]
    with pytest.raises(ValueError, match="max_responses_per_post"):
        apply_filters(df, max_responses_per_post=2, min_responses_per_post=5)


def test_truncate_post_policy():
    assert truncate_post("short text", 100) == "short text"
    assert truncate_post("alpha beta gamma", 13) == "alpha […]"  # budget 9: "alpha bet" -> word boundary
    assert truncate_post("alpha beta gamma", 15) == "alpha beta […]"  # cut falls on a space
    assert truncate_post("supercalifragilistic", 10) == "superc […]"  # one long word: hard cut
    with pytest.raises(ValueError):
        truncate_post("long enough text", 3)


# ---------------------------------------------------------------------------------------------
# split


def _posts_df(n_posts, sub="AITAH", start=0, responses=2):
    return to_frame([
        row(post_id=f"{sub[:2]}{i:03d}", subreddit=sub, post_created_utc=start + (i * 37) % n_posts,
            response_id=f"{sub[:2]}{i:03d}_{j}")
        for i in range(n_posts) for j in range(responses)
    ])


def test_split_chronological_by_post():
    df = _posts_df(50)
    out, summary = split_by_post(df, (0.7, 0.1, 0.2))
    assert out.groupby("post_id")["split"].nunique().max() == 1  # a post lives in one split
    assert {k: v["posts"] for k, v in summary.items()} == {"train": 35, "val": 5, "test": 10}
    assert sum(v["responses"] for v in summary.values()) == len(df)
    assert summary["train"]["last_post_utc"] <= summary["val"]["first_post_utc"]
    assert summary["val"]["last_post_utc"] <= summary["test"]["first_post_utc"]
    train, test = set(out.loc[out.split == "train", "post_id"]), set(out.loc[out.split == "test", "post_id"])
    assert not train & test


def test_split_ties_broken_by_post_id():
    df = to_frame([row(post_id=p, post_created_utc=5, response_id=p) for p in ["d", "b", "a", "c"]])
    out, _ = split_by_post(df, (0.5, 0.0, 0.5))
    assert dict(zip(out.post_id, out.split)) == {"a": "train", "b": "train", "c": "test", "d": "test"}


def test_split_per_subreddit():
    df = pd.concat([_posts_df(10, "AITAH", start=0), _posts_df(10, "AskReddit", start=10_000)], ignore_index=True)
    out, _ = split_by_post(df, (0.8, 0.0, 0.2))
    per_sub = out.drop_duplicates("post_id").groupby(["subreddit", "split"]).size().to_dict()
    assert per_sub == {("AITAH", "test"): 2, ("AITAH", "train"): 8, ("AskReddit", "test"): 2, ("AskReddit", "train"): 8}
    pooled, _ = split_by_post(df, (0.8, 0.0, 0.2), per_subreddit=False)
    assert set(pooled.loc[pooled.split == "test", "subreddit"]) == {"AskReddit"}  # the later subreddit


def test_split_sizes_validation():
    assert split_sizes(88, (0.7, 0.1, 0.2)) == [62, 8, 18]
    assert sum(split_sizes(7, (1 / 3, 1 / 3, 1 / 3))) == 7
    with pytest.raises(ValueError):
        split_sizes(10, (0.7, 0.1, 0.1))


def test_prepare_and_posts_table():
    df = _posts_df(10, responses=3)
    out, report = prepare(df, min_responses=3, fractions=(0.6, 0.2, 0.2))
    posts = posts_table(out)
    assert len(posts) == 10 and posts["n_responses"].eq(3).all()
    assert posts["post_created_utc"].is_monotonic_increasing
    assert posts["split"].value_counts().to_dict() == {"train": 6, "val": 2, "test": 2}
    assert report["rows_read"] == 30 and report["split"]["train"]["responses"] == 18


# ---------------------------------------------------------------------------------------------
# registry


@pytest.fixture
def data_tiny_registry(tmp_path):
    """A data dir with two crawler files, their manifest, and the matching registry dict."""
    root = tmp_path / "data"
    crawler = root / R.CRAWLER_SUBDIR
    files = {
        "docs/api/aitah/p2.json": thread("p2", 200, [("c", "NTA", 201)]),
        "docs/api/aitah/p1.json": thread("p1", 100, [("d", "YTA", 101)]),
    }
    manifest = ["path\tsubreddit_dir\tsubmission_id\tn_comment_entries\tn_nonempty_comments\tcreated_utc"]
    for rel, t in files.items():
        write_json(crawler / rel, t)
        manifest.append(f"{rel}\taitah\t{t['submission_id']}\t1\t1\t{t['created_utc']}")
    (crawler / "MANIFEST.tsv").write_text("\n".join(manifest) + "\n")
    reg_file = R.write_registry(crawler, tmp_path / "reg.txt")
    return root, R.load_registry(reg_file)


def test_build_registry_sorted_and_loadable(data_tiny_registry, tmp_path):
    root, reg = data_tiny_registry
    assert list(reg) == ["docs/api/aitah/p1.json", "docs/api/aitah/p2.json"]  # chronological
    p = root / R.CRAWLER_SUBDIR / "docs/api/aitah/p1.json"
    assert reg["docs/api/aitah/p1.json"] == "sha256:" + pooch.file_hash(str(p))
    # pooch itself accepts the format (comments included)
    pup = pooch.create(path=tmp_path / "c", base_url=R.BASE_URL)
    pup.load_registry(tmp_path / "reg.txt")
    assert pup.registry == {k: v for k, v in reg.items()}


def test_local_file_used_without_download(data_tiny_registry, data_no_network, monkeypatch):
    root, reg = data_tiny_registry
    path = R.fetch_file("docs/api/aitah/p1.json", data_dir=root, registry=reg)
    assert path == root / R.CRAWLER_SUBDIR / "docs/api/aitah/p1.json"
    monkeypatch.setenv(R.DATA_DIR_ENV, str(root))  # the env var is the default data dir
    assert R.fetch_file("docs/api/aitah/p2.json", registry=reg).name == "p2.json"
    assert data_no_network == []


def test_tampered_file_fails_naming_it(data_tiny_registry, data_no_network):
    root, reg = data_tiny_registry
    p = root / R.CRAWLER_SUBDIR / "docs/api/aitah/p2.json"
    p.write_text(p.read_text().replace("NTA", "YTA"))
    with pytest.raises(DataHashError, match=r"p2\.json: sha256 mismatch"):
        R.fetch_file("docs/api/aitah/p2.json", data_dir=root, registry=reg)
    assert data_no_network == []  # a bad local copy is reported, never silently replaced


def test_missing_file_offline_is_clear(data_tiny_registry, data_no_network, tmp_path, monkeypatch):
    root, reg = data_tiny_registry
    (root / R.CRAWLER_SUBDIR / "docs/api/aitah/p1.json").unlink()
    with pytest.raises(DataNotFoundError, match=rf"p1\.json.*{root}.*offline"):
        R.fetch_file("docs/api/aitah/p1.json", data_dir=root, registry=reg, offline=True)
    monkeypatch.setenv("SIMLIB_OFFLINE", "1")
    monkeypatch.delenv(R.DATA_DIR_ENV, raising=False)
    with pytest.raises(DataNotFoundError, match=r"p1\.json.*SIMLIB_DATA_DIR"):
        R.fetch_file("docs/api/aitah/p1.json", registry=reg, cache_dir=tmp_path / "cache")
    assert data_no_network == []


def test_missing_file_download_failure_is_clear(data_tiny_registry, data_no_network, tmp_path):
    root, reg = data_tiny_registry
    with pytest.raises(DataNotFoundError, match=r"p9\.json.*download .* failed: ConnectionError"):
        R.fetch_file("docs/api/aitah/p9.json", data_dir=root, cache_dir=tmp_path / "cache", offline=False,
                     registry={**reg, "docs/api/aitah/p9.json": reg["docs/api/aitah/p1.json"]})
    assert data_no_network == [R.BASE_URL + "docs/api/aitah/p9.json"]


@pytest.mark.parametrize("good", [True, False])
def test_download_path_verifies_hash(data_tiny_registry, tmp_path, monkeypatch, good):
    root, reg = data_tiny_registry
    source = root / R.CRAWLER_SUBDIR / "docs/api/aitah/p1.json"
    payload = source.read_bytes() if good else b"{}"

    def fake(self, url, output_file, pup, check_only=False):
        Path(output_file).write_bytes(payload)  # pooch passes a temporary file name

    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", fake)
    kwargs = dict(data_dir=tmp_path / "empty", cache_dir=tmp_path / "cache", offline=False, registry=reg)
    if good:
        path = R.fetch_file("docs/api/aitah/p1.json", **kwargs)
        assert path.is_relative_to(tmp_path / "cache") and path.read_bytes() == payload
    else:
        with pytest.raises(DataHashError, match=r"p1\.json"):
            R.fetch_file("docs/api/aitah/p1.json", **kwargs)


def test_sample_paths_order_and_max_posts():
    reg = R.load_registry()
    aitah = R.sample_paths(("aitah",), registry=reg)
    assert len(aitah) == 88 and all(p.startswith("docs/api/aitah/") for p in aitah)
    assert aitah[0].endswith("m6n71o.json")  # the 2021 mod post is the oldest
    ten, twenty = R.sample_paths("AITAH", 10, reg), R.sample_paths(("aitah",), 20, reg)
    assert len(ten) == 10 and set(ten) <= set(twenty)  # nested as max_posts grows
    assert ten == [p for p in aitah if p in set(ten)]  # returned chronologically
    assert ten != aitah[:10]  # a spread over the period, not the oldest threads
    both = R.sample_paths(("aitah", "askreddit"), 3, reg)
    assert [p.split("/")[2] for p in both] == ["aitah"] * 3 + ["askreddit"] * 3
    with pytest.raises(ValueError, match="unknown subreddit"):
        R.sample_paths(("worldnews",), registry=reg)


# ---------------------------------------------------------------------------------------------
# the real sample (read in place through SIMLIB_DATA_DIR; skipped when absent)


@needs_real
def test_committed_registry_matches_real_files():
    assert R.build_registry(REAL_CRAWLER) == R.REGISTRY_FILE.read_text(encoding="utf-8")


@needs_real
def test_real_aitah_sample(monkeypatch, data_no_network):
    monkeypatch.setenv(R.DATA_DIR_ENV, str(_real_data_dir()))
    df, report = load_posts(("aitah",), min_chars=1, min_responses=10, offline=True)
    assert report["files"] == 88 and report["posts_read"] == 88 and report["rows_read"] == 7219
    assert report["source"] == "crawler" and report["threads_read"] == report["threads_available"] == 88
    assert report["subreddits"] == ["AITAH"] and report["max_posts"] is None
    removed = {r["filter"]: r["rows_removed"] for r in report["filters"]}
    # Counts documented in SOURCES.md: 57 empty stubs, 19 [deleted]/[removed], 0 bot texts.
    assert removed["load_more_stubs"] == 57 and removed["deleted"] == 19 and removed["bots"] == 0
    mod = next(r for r in report["filters"] if r["filter"] == "mod_posts")
    assert mod["posts_removed"] == 1 and mod["rows_removed"] > 0
    assert "m6n71o" not in set(df["post_id"])
    posts = posts_table(df)
    assert len(posts) == 87 and posts["n_responses"].min() >= 10
    assert (posts["subreddit"] == "AITAH").all() and (posts["body"].str.len() > 0).all()
    assert {k: v["posts"] for k, v in report["split"].items()} == {"train": 61, "val": 9, "test": 17}
    assert data_no_network == []
