"""Pushshift / Arctic-Shift dumps select threads the way the pinned crawl does (issue 25).

``subreddits`` and ``n_posts`` mean the same for both sources: threads of the requested
subreddits (case-insensitive), at most ``n_posts`` per subreddit chosen by the hash rule of
:mod:`simlib.data.select` before filtering, returned in time order. Every dump here is written by
the test, plain and ``.zst``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import zstandard

from simlib import config, data, steps
from simlib.data import DumpSubredditError, describe, load_dumps, read_dumps
from simlib.data import registry as R
from simlib.data.select import select_ids, selection_key

REPO = Path(__file__).resolve().parents[1]
REAL_ROOT = Path(os.environ.get("SIMLIB_DATA_DIR") or REPO.parent / "shared" / "data")
needs_real = pytest.mark.skipif(not (REAL_ROOT / R.CRAWLER_SUBDIR / "docs").is_dir(), reason="real sample absent")

# Post ids chosen so that hash order and time order differ (checked in test_hash_order_is_not_time_order).
AITAH_IDS = [f"a{i:02d}" for i in range(12)]
ASK_IDS = [f"q{i:02d}" for i in range(8)]


def records(ids, sub, t0, n_comments=12, n_replies=2):
    """Submissions and comments of one subreddit: post ``i`` at ``t0 + 100 i`` with ``n_comments``
    top-level comments and ``n_replies`` replies."""
    subs = [{"id": pid, "subreddit": sub, "title": f"{sub} post {pid}?", "selftext": f"Story {pid}.",
             "created_utc": t0 + 100 * i, "author": f"op_{pid}", "score": 5} for i, pid in enumerate(ids)]
    comments = []
    for i, pid in enumerate(ids):
        for j in range(n_comments):
            comments.append({"id": f"{pid}c{j}", "link_id": f"t3_{pid}", "parent_id": f"t3_{pid}",
                             "body": f"Answer {j} to {pid}, in a few words.", "created_utc": t0 + 100 * i + j + 1,
                             "author": f"u{j}", "score": j})
        for j in range(n_replies):
            comments.append({"id": f"{pid}r{j}", "link_id": f"t3_{pid}", "parent_id": f"t1_{pid}c0",
                             "body": "a reply", "created_utc": t0 + 100 * i + 50, "author": "r", "score": 1})
    return subs, comments


def write_ndjson(path: Path, recs) -> Path:
    blob = b"".join(json.dumps(r).encode() + b"\n" for r in recs)
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(blob) if path.suffix == ".zst" else blob)
    return path


@pytest.fixture
def dump(tmp_path):
    """``make(ext, subreddits=("AITAH", "AskReddit"))`` -> [submissions, comments] paths, shuffled
    line order (a dump is not in time order, and the selection must not depend on line order)."""
    def make(ext="", subreddits=("AITAH", "AskReddit"), tag="RS"):
        subs, comments = [], []
        for sub in subreddits:
            s, c = records(AITAH_IDS if sub.lower() == "aitah" else ASK_IDS, sub, 1_000 if sub == "AITAH" else 5_000)
            subs += s
            comments += c
        subs, comments = subs[::-1], comments[1::2] + comments[::2]
        name = "_".join(subreddits)
        return [str(write_ndjson(tmp_path / f"{tag}_{name}.ndjson{ext}", subs)),
                str(write_ndjson(tmp_path / f"RC_{name}.ndjson{ext}", comments))]
    return make


def smallest(ids, k):
    return sorted(ids, key=selection_key)[:k]


# ------------------------------------------------------------------------------ the rule


def test_hash_order_is_not_time_order():
    # Otherwise the tests below could not tell "hash-chosen" from "the oldest threads".
    assert smallest(AITAH_IDS, 4) != AITAH_IDS[:4] and smallest(AITAH_IDS, 4) != AITAH_IDS[-4:]


def test_select_ids_nested_and_order_free():
    assert select_ids(AITAH_IDS, None) == set(AITAH_IDS)
    assert select_ids(AITAH_IDS, 4) == set(smallest(AITAH_IDS, 4)) == select_ids(AITAH_IDS[::-1], 4)
    assert select_ids(AITAH_IDS, 3) < select_ids(AITAH_IDS, 4) < select_ids(AITAH_IDS, 20)
    assert select_ids(AITAH_IDS, 0) == set()
    with pytest.raises(ValueError, match="max_posts must be >= 0"):
        select_ids(AITAH_IDS, -1)


def test_crawler_and_dump_choose_the_same_threads(dump):
    """A thread present in both sources is chosen by both: the registry ranks by file stem = post id."""
    registry = {f"docs/api/aitah/{pid}.json": "sha256:0" for pid in AITAH_IDS}  # chronological, like the real one
    crawl = [Path(p).stem for p in R.sample_paths(("aitah",), 5, registry)]
    df = read_dumps([dump()], ["aitah"], 5)
    assert crawl == df["post_id"].drop_duplicates().tolist() == [p for p in AITAH_IDS if p in smallest(AITAH_IDS, 5)]


# ------------------------------------------------------------------------------ the reader


@pytest.mark.parametrize("ext", ["", ".zst"])
def test_cap_and_subreddit_filter_apply(dump, ext):
    df = read_dumps([dump(ext)], ["aitah"], 4)
    posts = df["post_id"].drop_duplicates().tolist()
    assert set(df["subreddit"]) == {"AITAH"}  # r/AskReddit was not asked for: skipped
    assert posts == [p for p in AITAH_IDS if p in smallest(AITAH_IDS, 4)]  # hash-chosen, in time order
    assert len(df) == 4 * 12  # every top-level comment of a chosen thread, no reply
    stats = df.attrs["read_stats"]
    assert stats["threads_read"] == 4 and stats["submissions"] == 12
    assert stats["subreddits_held"] == {"AITAH": 12, "AskReddit": 8}
    assert stats["comments_read"] == 20 * 14 and stats["replies_dropped"] == 20 * 2
    assert stats["dumps"] == [[Path(p).name for p in dump(ext)]]  # names only: no local path reaches the book


def test_cap_is_per_subreddit_and_keeps_request_order(dump):
    df = read_dumps([dump()], ["AskReddit", "AITAH"], 3)
    per_sub = df.drop_duplicates("post_id").groupby("subreddit", sort=False)["post_id"].apply(list).to_dict()
    assert list(per_sub) == ["AskReddit", "AITAH"]
    assert per_sub == {"AskReddit": [p for p in ASK_IDS if p in smallest(ASK_IDS, 3)],
                       "AITAH": [p for p in AITAH_IDS if p in smallest(AITAH_IDS, 3)]}


def test_no_cap_reads_every_thread_and_zst_equals_plain(dump):
    plain, zst = read_dumps([dump()], ["aitah", "askreddit"]), read_dumps([dump(".zst")], ["aitah", "askreddit"])
    assert plain["post_id"].nunique() == 20 and len(plain) == 20 * 12
    cols = [c for c in data.COLUMNS if c != "source_file"]
    assert plain[cols].equals(zst[cols])


def test_dump_of_another_subreddit_names_what_it_holds(dump):
    only_ask = dump(subreddits=("AskReddit",))
    with pytest.raises(DumpSubredditError, match=r"no submission of r/aitah.*hold r/AskReddit \(8 submissions\)"):
        read_dumps([only_ask], ["aitah"], 4)
    with pytest.raises(DumpSubredditError, match=r"no submission of r/worldnews") as err:
        read_dumps([dump()], ["aitah", "worldnews"])
    assert "r/AITAH (12 submissions)" in str(err.value) and "RS_AITAH_AskReddit.ndjson" in str(err.value)


def test_pairs_are_pooled(dump, tmp_path):
    """Monthly dumps: a post's comments may sit in another pair's comments file."""
    s, c = dump()
    empty = tmp_path / "empty.ndjson"
    empty.write_text("")
    pooled = read_dumps([[s, str(empty)], [str(empty), c]], ["aitah"], 4)
    assert pooled.equals(read_dumps([[s, c]], ["aitah"], 4)) and pooled["post_id"].nunique() == 4


# ------------------------------------------------------------------------------ the run step


def smoke(tmp_path, **overrides):
    return config.load("smoke", {"work_dir": str(tmp_path / "runs"), **overrides})


@pytest.mark.parametrize("ext", ["", ".zst"])
def test_real_responses_applies_n_posts_and_subreddits_to_dumps(tmp_path, dump, ext):
    cfg = smoke(tmp_path, dumps=[dump(ext)], subreddits=["askreddit"], n_posts=5, min_responses=10, max_responses=12)
    df, report = steps.real_responses(cfg)
    posts = data.posts_table(df)
    assert set(posts["post_id"]) == set(smallest(ASK_IDS, 5)) and set(posts["subreddit"]) == {"AskReddit"}
    assert report["source"] == "dumps" and report["threads_read"] == 5 and report["threads_available"] == 8
    assert report["rows_read"] == 5 * 12 and report["max_posts"] == 5
    # n_posts = 0 reads every thread of the requested subreddit, and only of it
    df_all, _ = steps.real_responses(smoke(tmp_path / "all", dumps=[dump(ext)], subreddits=["askreddit"], n_posts=0))
    assert set(df_all["post_id"]) == set(ASK_IDS)


def test_real_responses_stops_on_a_dump_without_the_subreddit(tmp_path, dump):
    cfg = smoke(tmp_path, dumps=[dump(subreddits=("AskReddit",))])  # smoke asks for aitah
    with pytest.raises(DumpSubredditError, match=r"r/aitah.*r/AskReddit"):
        steps.real_responses(cfg)
    assert not list(cfg.path("data", "x").parent.glob("real-*"))  # nothing cached


def test_config_takes_any_subreddit_name_with_dumps_only(tmp_path):
    pair = [str(tmp_path / "s.zst"), str(tmp_path / "c.zst")]
    for p in pair:  # dump paths must exist (simlib.inputs)
        Path(p).write_bytes(b"")
    with pytest.raises(config.ConfigError, match="subreddits must be"):
        config.load("smoke", {"subreddits": ["AmItheAsshole"]})
    cfg = config.load("smoke", {"subreddits": ["AmItheAsshole"], "dumps": [pair]})
    assert cfg.subreddits == ["AmItheAsshole"]
    with pytest.raises(config.ConfigError, match="subreddits must be"):
        config.load("smoke", {"subreddits": [""], "dumps": [pair]})


# ------------------------------------------------------------------------------ the chapter's glue


def test_chapter_values_for_dumps(tmp_path, dump):
    pair = dump(".zst")
    df, report = load_dumps([pair], ["aitah"], max_posts=4, min_responses=10, max_responses_per_post=12,
                            fractions=(0.5, 0.25, 0.25))
    values = describe(report, df)
    assert values["n_threads"] == 4 and values["rows_read"] == 48 and values["n_posts"] == 4
    assert values["n_responses"] == 48 and values["median_per_post"] == 12.0
    text = values["data_source"]
    assert "This run read 4 of the 12 threads of r/AITAH" in text
    assert " + ".join(Path(p).name for p in pair) in text and str(tmp_path) not in text
    assert "280 comment lines read, 40 of them replies" in text and "at most 4 per subreddit" in text
    assert "None" not in text and "crawl" not in text
    df, report = load_dumps([pair], ["aitah"], min_responses=10)
    uncapped = describe(report, df)
    assert "This run read 12 of the 12 threads" in uncapped["data_source"] and "all of them" in uncapped["data_source"]


@needs_real
def test_chapter_values_for_the_pinned_crawl(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMLIB_OFFLINE", "1")
    cfg = smoke(tmp_path)
    df, report = steps.real_responses(cfg)
    values = describe(report, df)
    assert report["source"] == "crawler" and values["n_threads"] == report["files"] == cfg.n_posts
    assert values["rows_read"] == report["rows_read"] > 0 and values["n_posts"] == data.posts_table(df).shape[0]
    text = values["data_source"]
    assert f"This run read {cfg.n_posts} of the 88 threads of r/AITAH" in text
    assert "JianLoong/reddit-crawler" in text and f"at most {cfg.n_posts} per subreddit" in text
    assert "None" not in text and "dump" not in text
