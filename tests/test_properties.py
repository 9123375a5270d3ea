"""Property tests (hypothesis): the NDJSON reader, the config parser, the verdict parser, truncation.

Examples are few (max_examples <= 50) and there is no deadline: the machine is a shared 2-core CPU.
"""
from __future__ import annotations

import json
import math
import string
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from simlib import config
from simlib.config import Config, ConfigError
from simlib.data import DataFormatError, iter_ndjson, read_pushshift
from simlib.measures.aita import VERDICTS, parse_verdict
from simlib.text import truncate_post
from simlib.text import TRUNCATION_MARKER

SETTINGS = dict(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ------------------------------------------------------------------------------------ NDJSON
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)  # any valid Unicode, no surrogates
ids = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=8)
opt_int = st.one_of(st.none(), st.integers(-10**6, 10**6))


@st.composite
def dumps(draw):
    """(submissions, comments): unique post ids, top-level comments and replies, odd Unicode."""
    post_ids = draw(st.lists(ids, min_size=1, max_size=4, unique=True))
    subs = [{"id": draw(st.sampled_from([p, "t3_" + p])), "subreddit": draw(st.sampled_from(["AITAH", "AskReddit"])),
             "title": draw(text), "selftext": draw(st.one_of(st.none(), text)),
             "created_utc": draw(st.one_of(st.integers(0, 2**40), st.integers(0, 2**31).map(str))),
             "author": draw(st.one_of(st.none(), text)), "score": draw(opt_int)} for p in post_ids]
    comments = []
    for i in range(draw(st.integers(0, 12))):
        pid = draw(st.sampled_from(post_ids))
        top = draw(st.booleans())
        comments.append({"id": f"c{i}", "link_id": f"t3_{pid}", "parent_id": f"t3_{pid}" if top else f"t1_c{i - 1}",
                         "body": draw(text), "created_utc": draw(st.integers(0, 2**40)), "score": draw(opt_int),
                         "author": draw(st.one_of(st.none(), text))})
    return subs, comments


def write(path: Path, records, blank_lines: bool = False) -> Path:
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in records]
    data = (b"\n\n" if blank_lines else b"\n").join(lines) + (b"\n" if lines else b"")
    path.write_bytes(zstandard.ZstdCompressor().compress(data) if path.suffix == ".zst" else data)
    return path


@settings(**SETTINGS)
@given(d=dumps(), ext=st.sampled_from(["", ".zst"]), blank=st.booleans())
def test_ndjson_reader_round_trips(tmp_path_factory, d, ext, blank):
    subs, comments = d
    tmp = tmp_path_factory.mktemp("nd")
    s, c = write(tmp / f"RS.ndjson{ext}", subs, blank), write(tmp / f"RC.ndjson{ext}", comments, blank)
    assert [rec for _, rec in iter_ndjson(c)] == comments
    df = read_pushshift(s, c)
    top = [x for x in comments if x["parent_id"] == x["link_id"]]
    assert df["response_id"].tolist() == [x["id"] for x in top]
    assert df["response_text"].tolist() == [x["body"] for x in top]
    assert df["response_created_utc"].tolist() == [x["created_utc"] for x in top]
    by_id = {x["id"].removeprefix("t3_"): x for x in subs}
    for row in df.itertuples():
        post = by_id[row.post_id]
        assert row.title == post["title"] and row.body == (post["selftext"] or "")
        assert row.post_created_utc == int(post["created_utc"])
    stats = df.attrs["read_stats"]
    assert stats["comments_read"] == len(comments) and stats["replies_dropped"] == len(comments) - len(top)


@settings(**SETTINGS)
@given(d=dumps(), ext=st.sampled_from(["", ".zst"]), data=st.data())
def test_ndjson_reader_never_half_loads(tmp_path_factory, d, ext, data):
    """A file cut anywhere inside its data either raises or (cut at a line end of a plain file) yields
    exactly the complete lines before the cut, never a torn record."""
    subs, comments = d
    assume(comments)
    tmp = tmp_path_factory.mktemp("cut")
    s, c = write(tmp / f"RS.ndjson{ext}", subs), write(tmp / f"RC.ndjson{ext}", comments)
    full = c.read_bytes()
    cut = data.draw(st.integers(0, len(full) - 1), label="cut")
    c.write_bytes(full[:cut])
    try:
        got = [rec for _, rec in iter_ndjson(c)]
        read_pushshift(s, c)
    except DataFormatError as err:
        assert c.name in str(err)
        return
    assert ext == "", "a cut .zst must never load"
    assert got == comments[: len(got)]  # a prefix of complete records
    tail = full[:cut].rsplit(b"\n", 1)[-1]  # what follows the last newline kept
    assert tail.strip() == b"" or _is_object(tail)  # nothing, or a whole record (cut before its newline)


def _is_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


# ------------------------------------------------------------------------------------ config
# Valid values per field (the profile ci fixes the rest; its min_responses is 10).
VALID = {
    "seed": st.integers(0, 2**31),
    "n_posts": st.integers(0, 10_000),
    "min_chars": st.integers(0, 100),
    "max_responses": st.integers(10, 1000),
    "max_post_chars": st.integers(5, 100_000),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0.01, 1),
    "max_tokens": st.integers(1, 4096),
    "concurrency": st.integers(1, 64),
    "use_batch_api": st.booleans(),
    "n_per_group": st.integers(2, 100),
    "n_boot": st.integers(1000, 10_000),  # the floor of simlib.inputs.N_BOOT_FLOOR
    "reward_aggregate": st.sampled_from(["max", "mean"]),
    "grpo_steps": st.integers(1, 1000),
    "grpo_seeds": st.lists(st.integers(0, 100), min_size=1, max_size=4),
    "num_generations": st.integers(2, 16),
    "beta": st.floats(0, 10),
    "loss_type": st.sampled_from(["grpo", "dapo", "dr_grpo", "bnpo"]),
    "learning_rate": st.floats(1e-8, 0.5),
    "use_lora": st.booleans(),
    "styles": st.lists(st.sampled_from(["plain", "humanlike", "persona", "seeded"]), min_size=1, max_size=4, unique=True),
    "subreddits": st.lists(st.sampled_from(["aitah", "askreddit"]), min_size=1, max_size=2, unique=True),
    "logprob_batch_size": st.integers(1, 256),
}


@settings(**SETTINGS)
@given(values=st.fixed_dictionaries({}, optional=VALID))
def test_config_accepts_valid_values_and_reflects_them(values):
    cfg = config.load("ci", values)
    for k, v in values.items():
        assert getattr(cfg, k) == v, k


def _as_cli(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list):
        return json.dumps(v)
    return repr(v) if isinstance(v, float) else str(v)


@settings(**SETTINGS)
@given(values=st.fixed_dictionaries({}, optional=VALID))
def test_config_from_command_line_strings_equals_typed_values(values):
    """``--set k=v`` strings coerce to the same config as typed values."""
    sets = [f"{k}={_as_cli(v)}" for k, v in values.items()]
    assert config.load("ci", config.parse_sets(sets)) == config.load("ci", values)


unknown_names = st.text(string.ascii_lowercase + "_", min_size=1, max_size=20).filter(
    lambda n: n not in config.FIELD_NAMES and n != "profile")


@settings(**SETTINGS)
@given(names=st.lists(unknown_names, min_size=1, max_size=3, unique=True), known=st.fixed_dictionaries({}, optional=VALID))
def test_unknown_names_always_raise_listing_valid_names(names, known):
    with pytest.raises(ConfigError) as exc:
        config.load("ci", {**known, **{n: 1 for n in names}})
    msg = str(exc.value)
    assert all(repr(n) in msg for n in names)
    assert "valid names: " + ", ".join(config.FIELD_NAMES) in msg


OUT_OF_RANGE = {
    "seed": st.integers(max_value=-1),
    "n_posts": st.integers(max_value=-1),
    "n_boot": st.integers(max_value=-1),
    "max_tokens": st.integers(max_value=0),
    "concurrency": st.integers(max_value=0),
    "max_post_chars": st.integers(max_value=4),
    "num_generations": st.integers(max_value=1),
    "max_responses": st.integers(-100, 9),  # < min_responses (10 in ci)
    "temperature": st.one_of(st.floats(max_value=-1e-9, allow_nan=False), st.floats(min_value=2.0000001), st.just(math.nan)),
    "top_p": st.one_of(st.floats(max_value=0, allow_nan=False), st.floats(min_value=1.0000001)),
    "train_frac": st.one_of(st.floats(max_value=0, allow_nan=False), st.floats(min_value=1, allow_nan=False)),
    "learning_rate": st.one_of(st.floats(max_value=0, allow_nan=False), st.floats(min_value=1, allow_nan=False)),
    "beta": st.floats(max_value=-1e-12, allow_nan=False),
    "grpo_seeds": st.lists(st.integers(max_value=-1), min_size=1, max_size=3),
}


@settings(**SETTINGS)
@given(name=st.sampled_from(sorted(OUT_OF_RANGE)), data=st.data())
def test_out_of_range_values_raise_naming_the_parameter(name, data):
    value = data.draw(OUT_OF_RANGE[name], label=name)
    with pytest.raises(ConfigError) as exc:
        config.load("ci", {name: value})
    assert name in str(exc.value)


@settings(**SETTINGS)
@given(name=st.sampled_from(["n_posts", "seed", "max_tokens", "grpo_steps"]),
       value=st.one_of(st.text(string.ascii_letters, min_size=1, max_size=8), st.floats(allow_nan=False).filter(
           lambda f: not float(f).is_integer()), st.booleans()))
def test_wrong_types_raise_naming_the_parameter(name, value):
    with pytest.raises(ConfigError, match=f"parameter {name}"):
        config.load("ci", {name: value})


keys = st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=12)
vals = st.text(st.characters(blacklist_categories=("Cs", "Zl", "Zp", "Cc")), max_size=20).map(str.strip)


@settings(**SETTINGS)
@given(pairs=st.dictionaries(keys, vals, max_size=6))
def test_parse_sets_round_trips(pairs):
    assert config.parse_sets([f"{k}={v}" for k, v in pairs.items()]) == pairs
    assert config.parse_sets([f" {k} = {v} " for k, v in pairs.items()]) == pairs


@settings(**SETTINGS)
@given(s=st.text(max_size=20).filter(lambda s: "=" not in s))
def test_parse_sets_without_equals_raises(s):
    with pytest.raises(ConfigError, match="expects key=value"):
        config.parse_sets([s])


def test_profiles_are_valid_configs():
    for p in config.profiles():
        assert isinstance(config.load(p), Config)


# ------------------------------------------------------------------------------------ verdicts
@settings(max_examples=50, deadline=None)
@given(t=st.one_of(st.none(), st.text(max_size=300), st.binary(max_size=50).map(lambda b: b.decode("latin-1")),
                   st.lists(st.sampled_from(["NTA", "yta", "ESH", "nah", "INFO", "not the asshole", "AITA", "WIBTA",
                                             " ", "**", ".", "you're the a-hole", "\u2019", "santa", "mental"]),
                            max_size=12).map("".join)))
def test_parse_verdict_never_raises(t):
    v = parse_verdict(t)
    assert v is None or v in VERDICTS


# ------------------------------------------------------------------------------------ truncation
@settings(max_examples=50, deadline=None)
@given(t=st.text(max_size=400), limit=st.integers(5, 300))
def test_truncate_post_within_limit_and_a_prefix(t, limit):
    out = truncate_post(t, limit)
    assert len(out) <= limit
    if len(t) <= limit:
        assert out == t
    else:
        assert out.endswith(TRUNCATION_MARKER)
        head = out[: -len(TRUNCATION_MARKER)]
        assert t.startswith(head) and head == head.rstrip()
