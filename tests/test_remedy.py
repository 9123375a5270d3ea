"""The remedy chapter's tables, targets and wiring, on small hand-made tables."""
import numpy as np
import pandas as pd
import pytest

from simlib import config, steps
from simlib.findings import remedy
from simlib.measures.diversity import per_post_diversity


def _responses(rng):
    """Four posts; real replies vary, `plain` repeats itself, `persona` sits in between."""
    rows = []
    for p in range(4):
        for i in range(4):
            rows.append({"post_id": f"p{p}", "source": "real", "text": f"NTA {i} real words {p * 10 + i}"})
            rows.append({"post_id": f"p{p}", "source": "plain", "text": "It depends on both sides."})
            rows.append({"post_id": f"p{p}", "source": "humanlike", "text": "YTA honestly." if i else "NTA."})
            rows.append({"post_id": f"p{p}", "source": "persona", "text": ["NTA", "YTA", "ESH", "lol"][i] + f" {p}"})
    df = pd.DataFrame(rows)
    base = {"real": 0.0, "plain": 1.0, "humanlike": 0.8, "persona": 0.3}
    emb = np.stack([rng.normal(size=8) * (1 - base[s]) + np.ones(8) * base[s] * 3 for s in df["source"]])
    lp = {"real": -4.0, "plain": -1.0, "humanlike": -1.5, "persona": -3.0}
    scores = df.assign(mean_logprob=[lp[s] + rng.normal(scale=0.1) for s in df["source"]])
    return df, emb, scores


@pytest.fixture()
def tables():
    df, emb, scores = _responses(np.random.default_rng(0))
    long = remedy.measure_table(per_post_diversity(df, emb), df, scores, n_boot=200)
    return df, long


def test_measure_table_has_every_measure_with_intervals(tables):
    _, long = tables
    assert set(long["measure"]) >= {"repetition", "vendi", "distinct_2", "verdict_entropy_pooled", "no_verdict",
                                    "mean_logprob", "logprob_sd"}
    ok = long.dropna(subset=["mean", "lo", "hi"])
    assert (ok["lo"] <= ok["mean"] + 1e-12).all() and (ok["mean"] <= ok["hi"] + 1e-12).all()
    lp = long[long["measure"] == "mean_logprob"].set_index("source")["mean"]
    assert lp["real"] == pytest.approx(-4.0, abs=0.1) and lp["plain"] == pytest.approx(-1.0, abs=0.1)
    none = long[long["measure"] == "no_verdict"].set_index("source")["mean"]
    assert none["plain"] == 1.0 and none["real"] == 0.0 and none["persona"] == pytest.approx(0.25)


def test_ranking_puts_the_closest_style_first(tables):
    _, long = tables
    ranks = remedy.ranking(long)
    lp = ranks[ranks["measure"] == "mean_logprob"].set_index("source")
    assert lp.loc["persona", "rank"] == 1 and lp.loc["plain", "rank"] == 3
    assert bool(lp.loc["persona", "closer_than_baselines"]) and not bool(lp.loc["plain", "closer_than_baselines"])
    assert not bool(lp.loc["persona", "overlaps"])  # -3 +- 0.1 is far from -4
    table = remedy.rank_table(ranks)
    assert "mean rank" in table.index and "real" not in table.columns
    assert remedy.wide(long).shape[1] == 4


def _per_post(style_shift: float, n: int = 30, noise: float = 0.01, seed: int = 0) -> pd.DataFrame:
    """Repetition per post: real 0.3, baselines 0.5; persona at 0.5 - style_shift."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n):
        for src, level in (("real", 0.3), ("plain", 0.5), ("humanlike", 0.5), ("persona", 0.5 - style_shift)):
            rows.append({"post_id": f"p{p}", "source": src, "repetition": level + rng.normal(0, noise)})
    return pd.DataFrame(rows)


def test_remedy_verdict_branches_and_equivalence():
    rule = remedy.remedy_rule(0.05)
    closes, t = remedy.remedy_verdicts(_per_post(0.2), ["persona"], 0.05, n_boot=300)
    assert closes["persona"].verdict == "reproduces" and bool(t.loc["persona", "closes the gap (TOST)"])
    assert closes["persona"].rule == rule and closes["persona"].n == 30
    narrows, t = remedy.remedy_verdicts(_per_post(0.1), ["persona"], 0.05, n_boot=300)
    assert narrows["persona"].verdict == "reproduces" and not bool(t.loc["persona", "closes the gap (TOST)"])
    same, _ = remedy.remedy_verdicts(_per_post(0.0), ["persona"], 0.05, n_boot=300)
    assert same["persona"].verdict == "contradicts"  # rules out narrowing by the margin
    few, _ = remedy.remedy_verdicts(_per_post(0.1, n=5, noise=0.3), ["persona"], 0.05, n_boot=300)
    assert few["persona"].verdict == "inconclusive"
    missing, _ = remedy.remedy_verdicts(_per_post(0.1), ["seeded"], 0.05, n_boot=300)
    assert missing["seeded"].verdict == "inconclusive" and missing["seeded"].n == 0


def test_pooled_bootstrap_resamples_posts():
    point, lo, hi = remedy.pooled_bootstrap([[0.0, 0.0], [1.0, 1.0], [2.0]], lambda xs: float(np.mean(xs)), n_boot=500)
    assert point == pytest.approx(0.8) and lo < point < hi  # pooled: 4 / 5, not the mean of post means
    assert np.isnan(remedy.pooled_bootstrap([], np.mean)[0])


def test_remedy_settings_are_validated():
    assert config.load("ci").remedy_styles == ["persona", "seeded"]
    with pytest.raises(config.ConfigError, match="remedy_styles"):
        config.load("ci", {"remedy_styles": ["casual"]})
    with pytest.raises(config.ConfigError, match="policy_max_post_chars"):
        config.load("ci", {"policy_max_post_chars": 3})
    with pytest.raises(config.ConfigError, match="seed_examples"):
        config.load("ci", {"seed_examples": 0})


def test_policy_prompts_cut_posts():
    posts = pd.DataFrame([{"post_id": "a", "title": "AITA?", "body": "word " * 400, "subreddit": "AITAH"}])
    long = steps.policy_prompts(config.load("ci", {"policy_max_post_chars": 0, "max_post_chars": 2000}), posts)
    short = steps.policy_prompts(config.load("ci", {"policy_max_post_chars": 200, "max_post_chars": 2000}), posts)
    size = lambda df: sum(len(m["content"]) for m in df["prompt"][0])  # noqa: E731
    assert size(short) < 400 < 1500 < size(long)


def test_seeded_style_through_steps_needs_real_data():
    cfg = config.load("ci")
    with pytest.raises(ValueError, match="real"):
        steps.style_kwargs(cfg, ["seeded"])
    assert set(steps.style_kwargs(cfg, ["persona"])) == {"persona"}
