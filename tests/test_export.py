"""simlib export: a run's replies as a `datasets` parquet dataset that loads back exactly, with a card."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from simlib import config
from simlib.publish import export as exp

datasets = pytest.importorskip("datasets")


def _real():
    rows = []
    for p, split in (("p1", "train"), ("p2", "test")):
        for i in range(3):
            rows.append({"post_id": p, "subreddit": "AITAH", "title": f"AITA {p}?", "body": f"body of {p}",
                         "post_created_utc": "1700000000", "response_id": f"{p}c{i}",
                         "response_text": f"NTA, reply {i} to {p} \u2014 \u00e9", "response_created_utc": str(1700000100 + i),
                         "split": split})
    rows.append({**rows[-1], "response_id": "empty", "response_text": ""})  # dropped: no text
    return pd.DataFrame(rows)


def _store(tmp_path):
    recs = [{"key": f"k{i}", "post_id": "p2", "style": s, "sample_index": i, "model": "smollm2-135m-instruct",
             "text": f"{s} reply {i}", "finish_reason": "stop" if i else "length",
             "usage": {"prompt_tokens": 10, "completion_tokens": 5}, "temperature": 0.7, "top_p": 1.0,
             "max_tokens": 48, "seed": 0} for i, s in enumerate(["plain", "humanlike"])]
    path = tmp_path / "runs" / "generations.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


@pytest.fixture
def run(tmp_path, monkeypatch):
    from simlib import steps

    _store(tmp_path)
    cfg = config.load("smoke", {"work_dir": str(tmp_path / "runs")})
    monkeypatch.setattr(steps, "real_responses", lambda c: (_real(), {"subreddits": ["AITAH"]}))
    monkeypatch.setattr(steps, "test_posts", lambda c, real: real.drop_duplicates("post_id"))
    gated = pd.DataFrame({"post_id": ["p2", "p2"], "source": ["real", "plain"],
                          "text": ["NTA, reply 1 to p2 \u2014 \u00e9", "plain reply 0"],
                          "relevance": [0.5, 0.25], "fluency": [-3.0, -2.5], "passes": [True, False]})
    monkeypatch.setattr(exp, "chapter_quality", lambda c, real, posts: gated)
    monkeypatch.setattr(exp.perf, "read_state", lambda path: {"02_gap": {"key": "k"}})
    return cfg, tmp_path / "out"


def _load(path, cache):
    return datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(cache)).to_pandas()


def test_export_round_trips_through_datasets(run, tmp_path):
    cfg, out = run
    counts = exp.export(cfg, out)
    assert counts["real"] == 6 and counts["synthetic"] == 2 and counts["posts"] == 2 and counts["scored"] == 2
    written = exp.replies_table(cfg, _real(), pd.read_json(cfg.path("generations.jsonl"), lines=True),
                                exp.chapter_quality(cfg, None, None))
    back = _load(out / "replies.parquet", tmp_path / "cache")
    assert list(back.columns) == list(exp.FEATURES)
    pd.testing.assert_frame_equal(back.astype(object).where(back.notna(), None),
                                  written.astype(object).where(written.notna(), None), check_dtype=False)
    # the types are the declared ones, nulls stay nulls, text stays byte-exact
    assert back["temperature"].isna().sum() == 6 and back["text"].str.contains("\u00e9").sum() == 6
    row = back.set_index("reply_id").loc["k0"]
    assert row["style"] == "plain" and row["relevance"] == 0.25 and not row["passes_quality_gate"]
    assert back.loc[back["reply_id"] == "p2c1", "fluency"].item() == -3.0
    assert set(back["profile"]) == {"smoke"} and back["commit"].notna().all()
    posts = _load(out / "posts.parquet", tmp_path / "cache2")
    assert posts["post_id"].tolist() == ["p1", "p2"] and posts["split"].tolist() == ["train", "test"]


def test_folder_loads_by_its_card_and_the_card_says_what_it_must(run, tmp_path):
    cfg, out = run
    exp.export(cfg, out)
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))  # the card's configs: replies
    assert ds["train"].num_rows == 8
    posts = datasets.load_dataset(str(out), "posts", cache_dir=str(tmp_path / "cache"))
    assert posts["train"].num_rows == 2
    card = (out / "README.md").read_text()
    for needed in ("JianLoong/reddit-crawler", "MIT", "do not redistribute", "`relevance`", f"temperature {cfg.temperature}",
                   "2 of the 8 replies carry the gap chapter's quality measures", cfg.generator):
        assert needed in card, needed


def test_export_without_a_run_says_what_to_run(tmp_path, monkeypatch):
    cfg = config.load("smoke", {"work_dir": str(tmp_path / "empty")})
    with pytest.raises(exp.ExportError, match="--only 01_data --only 02_gap"):
        exp.export(cfg, tmp_path / "out")
    proc = subprocess.run([sys.executable, "-m", "simlib.publish.cli", "export", "--profile", "smoke",
                           "--set", f"work_dir={tmp_path / 'empty'}"], capture_output=True, text=True)
    assert proc.returncode == 2 and "02_gap" in proc.stderr


def test_quality_joins_on_post_source_and_text():
    rows = pd.DataFrame({"post_id": ["a", "a"], "source": ["real", "synthetic"], "text": ["x ", "y"]})
    gated = pd.DataFrame({"post_id": ["a"], "source": ["humanlike"], "text": ["y"], "relevance": [0.1],
                          "fluency": [-1.0], "passes": [True]})
    out = exp.with_quality(rows, gated)
    assert np.isnan(out.loc[0, "relevance"]) and out.loc[1, "relevance"] == 0.1


def test_card_names_the_dumps_when_the_run_read_dumps():
    from simlib.publish import card

    text = card.origin(config.load("smoke"), {"source": "dumps", "dumps": [["RS_2023-01.zst", "RC_2023-01.zst"]]})
    assert "`RS_2023-01.zst`" in text and "JianLoong" not in text and "do not redistribute" in text


def test_quality_needs_the_gap_chapter(run, monkeypatch):
    cfg, out = run
    monkeypatch.setattr(exp.perf, "read_state", lambda path: {"01_data": {"key": "k"}})
    with pytest.raises(exp.ExportError, match="--no-quality"):
        exp.export(cfg, out)
    assert exp.export(cfg, out, quality=False)["scored"] == 0
    assert "without them (`--no-quality`)" in (out / "README.md").read_text()
