"""Every valid parameter value runs the chapters' steps (issue 32): a sweep over the corners on tiny inputs.

Corners: ``subreddits`` r/AskReddit alone and both subreddits, dump input and the pinned crawl, an
OpenAI-compatible stub as the generator (``api_base_url``), the smallest ``n_samples``,
``n_per_group`` and ``grpo_seeds``, and ``remedy_styles`` empty. Each runs the steps of the gap
chapter (and the remedy chapter's measure table) as the notebooks call them, with a tiny random
scorer and judge so that a corner costs seconds. Then each empty input on its own: it fails early
naming the parameter to change, or the chapter writes the sentence that says so.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from stub_openai import StubServer  # noqa: E402

from simlib import config, data, steps  # noqa: E402
from simlib.data import EmptyDataError  # noqa: E402
from simlib.findings import gap, remedy, stance  # noqa: E402
from simlib.measures import aita, judge, verdicts  # noqa: E402
from simlib.measures.diversity import per_post_diversity, summarise  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL_ROOT = Path(os.environ.get("SIMLIB_DATA_DIR") or REPO.parent / "shared" / "data")
needs_real = pytest.mark.skipif(not (REAL_ROOT / data.registry.CRAWLER_SUBDIR / "docs").is_dir(),
                                reason="real sample absent")

AITA_REPLIES = ["NTA, she was rude to you first.", "YTA. You owed her that money.", "ESH honestly, both of you.",
                "NTA and you did the right thing.", "Soft YTA, apologise.", "lol what a story"]
ASK_REPLIES = ["Pizza, every single time.", "Probably my grandmother's soup.", "you're an asshole for asking",
               "Tacos on a Tuesday night.", "Nothing beats a cold beer.", "Whatever is in the fridge."]


def _records(sub: str, titles: list[str], replies: list[str], t0: int):
    subs, comments = [], []
    for i, title in enumerate(titles):
        pid = f"{sub[:2].lower()}{i}"
        subs.append({"id": pid, "subreddit": sub, "title": title, "selftext": f"Story number {i}, told briefly.",
                     "created_utc": t0 + 100 * i, "author": f"op{i}", "score": 3})
        comments += [{"id": f"{pid}c{j}", "link_id": f"t3_{pid}", "parent_id": f"t3_{pid}", "body": body,
                      "created_utc": t0 + 100 * i + j + 1, "author": f"u{j}", "score": 1}
                     for j, body in enumerate(replies)]
    return subs, comments


def write_dump(folder: Path, subreddits: tuple[str, ...]) -> list[str]:
    """A [submissions, comments] NDJSON pair with four threads per subreddit."""
    subs, comments = [], []
    if "AITAH" in subreddits:
        s, c = _records("AITAH", [f"AITA for skipping dinner {i}?" for i in range(4)], AITA_REPLIES, 1_700_000_000)
        subs, comments = subs + s, comments + c
    if "AskReddit" in subreddits:
        s, c = _records("AskReddit", [f"What food do you miss {i}?" for i in range(4)], ASK_REPLIES, 1_700_000_000)
        subs, comments = subs + s, comments + c
    paths = [folder / "RS.ndjson", folder / "RC.ndjson"]
    for path, recs in zip(paths, (subs, comments)):
        path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return [str(p) for p in paths]


@pytest.fixture(scope="module")
def stub():
    with StubServer() as s:
        yield s


def tiny_cfg(tmp_path, stub, tiny_policy, **over) -> config.Config:
    """The smallest valid settings, the stub as generator and a tiny random scorer and judge."""
    base = dict(work_dir=str(tmp_path / "runs"), api_base_url=stub.base_url, scorer=tiny_policy, judge=tiny_policy,
                n_posts=0, min_responses=2, max_responses=6, n_samples=2, n_per_group=2, grpo_seeds=[0],
                train_frac=0.5, val_frac=0.0, n_boot=1000, max_tokens=16, max_response_tokens=16, logprob_batch_size=8)
    return config.load("smoke", {**base, **over})


def gap_steps(cfg: config.Config) -> dict:
    """The gap chapter's steps, called as notebooks/02_gap.ipynb calls them; the glued sentences included."""
    real, _ = steps.real_responses(cfg)
    posts = steps.test_posts(cfg, real)
    scope = stance.scope(posts)
    synthetic, report = steps.synthetic_responses(cfg, posts)
    responses = gap.responses_table(real, synthetic, cfg.n_per_group, seed=cfg.seed)
    emb = steps.embeddings(cfg, responses["text"].tolist())
    per_post = gap.verdict_measures_where_asked(per_post_diversity(responses, emb), posts)
    summary = summarise(per_post, gap.measures_shown(per_post), n_boot=cfg.n_boot, seed=cfg.seed)
    scored = steps.reply_quality(cfg, responses, posts)
    gated, _ = gap.gate_responses(scored, keep=gap.QUALITY_KEEP)
    v = gap.gap_verdict(gap.passing_diversity(gated, emb, seed=cfg.seed), n_boot=cfg.n_boot, seed=cfg.seed)
    verdicts.record(cfg.path(), "gap", v)
    front = gap.frontier_table(scored, emb, seed=cfg.seed)
    table = gap.verdict_table(responses, posts)
    truth = steps.judge_validation_items(real, posts, max(2, cfg.n_per_group // 2), seed=cfg.seed)
    checked = steps.judge_labels(cfg, truth, questions=("stance",)).merge(
        truth[["item_id", "post_id", "verdict"]], on="item_id")
    val = judge.validate_stance(checked["stance"], checked["verdict"], checked["post_id"], n_boot=cfg.n_boot)
    valid = bool(val["kappa_lo"] > 0)
    test = aita.verdict_rows(responses[responses["split"] == "test"], posts)
    test = test.assign(item_id=test["post_id"] + ":" + test.index.astype(str),
                       title=test["post_id"].map(posts.set_index("post_id")["title"]))
    labels = steps.judge_labels(cfg, test)
    scores = steps.logprob_scores(cfg, responses, posts)
    long = remedy.measure_table(per_post_diversity(responses, emb), responses, scores, n_boot=cfg.n_boot,
                                seed=cfg.seed, posts=posts)
    text = " ".join([stance.verdict_reading(table, scope), stance.judge_reading(val, scope, valid),
                     stance.judge_use(valid, scope), stance.judge_summary(val, scope, valid),
                     stance.judge_figure_note(val), stance.humanlike_note(scope), stance.reply_range(scope),
                     stance.remedy_verdict_measures(scope), gap.frontier_reading(front, "plain")])
    return dict(real=real, posts=posts, scope=scope, report=report, responses=responses, summary=summary, v=v,
                table=table, truth=truth, val=val, labels=labels, long=long, text=text)


def test_askreddit_dump_with_the_stub_and_the_smallest_sizes(tmp_path, stub, tiny_policy):
    cfg = tiny_cfg(tmp_path, stub, tiny_policy, subreddits=["askreddit"],
                   dumps=[write_dump(tmp_path, ("AskReddit",))])
    out = gap_steps(cfg)
    assert not out["scope"].applies and out["report"]["n_failed"] == 0
    assert out["truth"].empty and out["labels"].empty and {"stance", "register", "label"} <= set(out["labels"])
    assert "verdict_entropy" not in set(out["summary"]["measure"])  # the spurious "you're an asshole" is no verdict
    assert not {"verdict_entropy", "verdict_entropy_pooled", "no_verdict"} & set(out["long"]["measure"])
    assert {"repetition", "mean_logprob"} <= set(out["long"]["measure"])
    assert "r/AskReddit has no verdicts to validate the judge against" in out["text"]
    assert "NTA" not in out["text"] and "bare verdicts" not in out["text"]
    assert "gap" in verdicts.load(cfg.path())  # the other verdicts still run and are recorded


def test_both_subreddits_read_verdicts_on_the_aita_posts_only(tmp_path, stub, tiny_policy):
    cfg = tiny_cfg(tmp_path, stub, tiny_policy, subreddits=["aitah", "askreddit"],
                   dumps=[write_dump(tmp_path, ("AITAH", "AskReddit"))])
    out = gap_steps(cfg)
    sc, posts = out["scope"], out["posts"]
    assert sc.applies and sc.n == (posts["subreddit"] == "AITAH").sum() < len(posts)
    assert sc.with_verdicts == ("AITAH",) and sc.without == ("AskReddit",)
    assert set(out["truth"]["subreddit"]) == {"AITAH"} and out["val"]["n"] == len(out["truth"]) > 0
    assert set(out["labels"]["item_id"].str.split(":").str[0]) <= set(sc.ids)
    assert f"only on the {sc.n} of {sc.n_posts} posts that ask for one (r/AITAH)" in out["text"]
    assert "verdict_entropy_pooled" in set(out["long"]["measure"])


def test_aitah_reads_as_before(tmp_path, stub, tiny_policy):
    cfg = tiny_cfg(tmp_path, stub, tiny_policy, subreddits=["aitah"], dumps=[write_dump(tmp_path, ("AITAH",))])
    out = gap_steps(cfg)
    assert out["scope"].n == out["scope"].n_posts
    assert "only on the" not in out["text"] and "Among replies that state a verdict" in out["text"]
    assert list(out["table"].loc["real", ["NTA", "YTA"]]) == pytest.approx([2 / 6, 2 / 6], abs=0.34)


@needs_real
def test_askreddit_crawl(tmp_path, stub, tiny_policy):
    cfg = tiny_cfg(tmp_path, stub, tiny_policy, subreddits=["askreddit"], n_posts=6, min_responses=4,
                   max_responses=6, max_post_chars=200)
    out = gap_steps(cfg)
    assert set(out["posts"]["subreddit"]) == {"AskReddit"} and not out["scope"].applies
    assert out["truth"].empty and "r/AskReddit has no verdicts" in out["text"]


@pytest.mark.parametrize("over, words", [
    ({"remedy_styles": []}, "remedy_styles must be a non-empty subset"),
    ({"grpo_seeds": []}, "grpo_seeds must name at least one seed"),
    ({"n_per_group": 1}, "n_per_group must be >= 2"),
    ({"subreddits": []}, "subreddits must be a non-empty subset"),
])
def test_values_below_the_smallest_fail_before_any_work(over, words):
    with pytest.raises(config.ConfigError, match=words):
        config.load("smoke", over)


def test_the_smallest_values_are_valid():
    cfg = config.load("smoke", {"n_samples": 2, "n_per_group": 2, "grpo_seeds": [0], "remedy_styles": ["persona"]})
    assert (cfg.n_samples, cfg.n_per_group, cfg.grpo_seeds) == (2, 2, [0])


# --------------------------------------------------------------------------- each empty input on its own
def _table(n_posts: int, per_post: int, chars: str = "an answer") -> pd.DataFrame:
    rows = [{"post_id": f"p{i}", "subreddit": "AskReddit", "title": f"Q{i}?", "body": "", "post_created_utc": 100 * i,
             "post_score": 1, "post_author": "op", "post_distinguished": None, "post_stickied": False,
             "response_id": f"p{i}r{j}", "response_text": chars, "response_created_utc": 100 * i + j + 1,
             "response_score": 1, "response_author": f"u{j}", "response_distinguished": None,
             "response_stickied": False, "response_parent_id": f"t3_p{i}", "permalink": ""}
            for i in range(n_posts) for j in range(per_post)]
    return pd.DataFrame(rows).astype({c: t for c, t in data.COLUMNS.items() if c in rows[0]})


def test_no_posts_left_after_filters_names_the_parameter():
    with pytest.raises(EmptyDataError, match="no posts left after the filters.*lower min_responses"):
        data.prepare(_table(3, 2), min_responses=5)


def test_no_held_out_posts_names_the_parameter():
    with pytest.raises(EmptyDataError, match="no held-out \\(test\\) posts.*raise n_posts"):
        data.prepare(_table(1, 3), fractions=(0.7, 0.1, 0.2))


def test_no_judge_items_loads_no_model_and_gives_the_columns(tmp_path):
    cfg = config.load("smoke", {"work_dir": str(tmp_path), "judge": "no-such-org/no-such-model"})
    out = steps.judge_labels(cfg, pd.DataFrame(columns=["item_id", "title", "text"]))
    assert out.empty and {"item_id", "stance", "stance_margin", "register", "label"} <= set(out.columns)
    val = judge.validate_stance(out["stance"], pd.Series(dtype=object), pd.Series(dtype=object))
    assert val["n"] == 0 and not bool(val["kappa_lo"] > 0)


def test_no_replies_pass_the_gate_reads_inconclusive_and_not_comparable():
    rng = np.random.default_rng(0)
    real = pd.DataFrame({"post_id": np.repeat(["a", "b"], 3), "source": "real", "relevance": rng.uniform(0.5, 0.9, 6),
                         "fluency": rng.uniform(-3, -1, 6)})
    syn = real.assign(source="plain", relevance=-1.0, fluency=-50.0)
    scored = pd.concat([real, syn], ignore_index=True).assign(text="x")
    emb = rng.normal(size=(len(scored), 4))
    gated, _ = gap.gate_responses(scored)
    assert not gated.loc[gated["source"] == "plain", "passes"].any()
    v = gap.gap_verdict(gap.passing_diversity(gated, emb), n_boot=50)
    assert v.verdict == "inconclusive" and v.n == 0
    front = gap.frontier_table(scored, emb, cuts=(0, 50))
    assert gap.frontier_reading(front, "plain").startswith("not comparable")


def test_no_group_reaching_n_per_group_names_the_parameters():
    real = pd.DataFrame({"post_id": ["a"] * 3, "split": "test", "response_text": ["x", "y", "z"]})
    syn = pd.DataFrame({"post_id": ["a"], "style": ["plain"], "text": ["s"]})
    with pytest.raises(ValueError, match="lower n_per_group, or raise n_samples"):
        gap.responses_table(real, syn, n_per_group=2)


def test_no_verdict_posts_give_empty_tables_and_the_sentence():
    posts = pd.DataFrame({"post_id": ["q1"], "title": ["Why?"], "subreddit": ["AskReddit"]})
    sc = stance.scope(posts)
    responses = pd.DataFrame({"post_id": ["q1"] * 2, "source": ["real", "plain"], "text": ["NTA lol", "YTA"]})
    assert gap.verdict_table(responses, posts).empty
    assert stance.verdict_reading(gap.verdict_table(responses, posts), sc).startswith("r/AskReddit has no verdicts")
    truth = steps.judge_validation_items(responses.assign(response_id=["r1", "r2"], response_text=responses["text"]),
                                         posts, per_post=2)
    assert truth.empty and list(truth.columns) == ["item_id", "post_id", "title", "subreddit", "text", "verdict"]


def test_aita_posts_without_a_stated_verdict_say_which_parameter_would_give_some():
    posts = pd.DataFrame({"post_id": ["a"], "title": ["AITA for leaving?"], "subreddit": ["AITAH"]})
    real = pd.DataFrame({"post_id": ["a"], "response_id": ["r"], "response_text": ["what a story"]})
    truth = steps.judge_validation_items(real, posts, per_post=2)
    val = judge.validate_stance(pd.Series(dtype=object), truth["verdict"], truth["post_id"])
    text = stance.judge_reading(val, stance.scope(posts), valid=False)
    assert truth.empty and "n_posts" in text and stance.judge_figure_note(val).startswith("There is no confusion")


def test_doctests_of_the_sentences_and_the_verdict_scope():
    import doctest

    for mod in (stance, aita, remedy):
        assert doctest.testmod(mod).failed == 0, mod.__name__
    runner = doctest.DocTestRunner()
    for t in doctest.DocTestFinder().find(data.length_span):
        assert runner.run(t).failed == 0
    assert data.describe({"threads_read": 1, "threads_available": 1, "rows_read": 2, "source": "crawler",
                          "max_posts": None, "subreddits": ["AskReddit"]},
                         _table(1, 2, "ok"))["length_span"] == "a factor of 1 from the shortest to the longest"


def test_a_remedy_style_without_enough_posts_reads_why_not_nan():
    per_post = pd.DataFrame({"post_id": ["a"] * 4, "source": ["real", "plain", "humanlike", "seeded"],
                             "repetition": [0.3, 0.5, 0.5, 0.4]})
    v, table = remedy.remedy_verdicts(per_post, ["seeded"], 0.05, n_boot=50)
    text = remedy.verdicts_reading(v, table)
    assert "nan" not in text and "too few for an effect" in text
