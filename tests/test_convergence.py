"""Tests for simlib.findings.convergence (the log-prob chapter's controls and verdict) on small synthetic
tables: no model is loaded, so the whole file runs in seconds on a CPU."""
from __future__ import annotations

import doctest

import numpy as np
import pandas as pd
import pytest

from simlib import config
from simlib.findings import convergence as cv
from simlib.measures import alignment as al


def _scores(rng, posts=30, per=6, shift=None, sd=None, temperature=None):
    """A scores table: ``shift[source]`` added to a per-post level, reply noise ``sd[source]``."""
    shift = shift or {"real": 0.0, "plain": 0.5, "own": 1.0}
    sd = sd or {s: 0.3 for s in shift}
    rows = []
    for p in range(posts):
        level = rng.normal(-3.0, 0.5)
        for src, d in shift.items():
            for _ in range(per):
                rows.append({"post_id": f"p{p}", "source": src, "mean_logprob": level + d + rng.normal(0, sd[src]),
                             "temperature": np.nan if src == "real" else temperature})
    s = pd.DataFrame(rows)
    return s.assign(mean_logprob_eq=s["mean_logprob"])


def test_doctests():
    assert doctest.testmod(cv).failed == 0
    assert doctest.testmod(al).failed == 0


# --------------------------------------------------------------------------- length


def _two_lengths(rng, posts=40, per=5):
    """Sources identical in every token; `long` replies simply go on for longer, and later tokens
    are more predictable (as in real text), so their full-length mean is higher."""
    rows = []
    for p in range(posts):
        level = rng.normal(-3.0, 0.4)
        for i in range(per):
            toks = list(level + rng.normal(0, 0.5, size=80) + np.linspace(0, 1.5, 80))
            for src, n in (("short", 16), ("long", 80)):
                rows.append({"post_id": f"p{p}", "source": src, "tokens": toks[:n]})
    df = pd.DataFrame(rows)
    full = [cv.equal_length_mean(t, 10**6) for t in df["tokens"]]
    eq = [cv.equal_length_mean(t, 16) for t in df["tokens"]]
    return df.assign(mean_logprob=[m for m, _ in full], n_tokens=[n for _, n in full],
                     mean_logprob_eq=[m for m, _ in eq], n_tokens_eq=[n for _, n in eq])


def test_equal_length_removes_a_pure_length_difference():
    s = _two_lengths(np.random.default_rng(0))
    raw = cv.paired_difference(s, "long", "short", "mean_logprob")
    assert raw["lo"] > 0.3  # without the control, length alone reads as "more predictable"
    eq = cv.paired_difference(s, "long", "short", "mean_logprob_eq")
    assert eq["diff"] == pytest.approx(0.0, abs=1e-12) and eq["lo"] <= 0 <= eq["hi"]


def test_length_regression_controls_length_with_post_fixed_effects():
    rng = np.random.default_rng(1)
    rows = []
    for p in range(40):
        level = rng.normal(-3.0, 1.0)  # post levels would bias a pooled regression; FE removes them
        for src, lens in (("real", (60, 120)), ("plain", (10, 40))):
            for n in rng.integers(*lens, size=6):
                rows.append({"post_id": f"p{p}", "source": src, "n_tokens": int(n),
                             "mean_logprob": level + 0.3 * np.log2(n) + rng.normal(0, 0.1)})
    s = pd.DataFrame(rows)
    naive = cv.paired_difference(s, "plain", "real", "mean_logprob")
    assert naive["hi"] < -0.2  # shorter replies look less predictable
    reg = cv.length_regression(s, n_boot=500)
    assert reg.loc["log2 length", "coef"] == pytest.approx(0.3, abs=0.05)
    assert reg.loc["plain", "lo"] <= 0 <= reg.loc["plain", "hi"]
    assert abs(reg.loc["plain", "coef"]) < 0.05


def test_equal_tokens_is_the_shortest_cap():
    assert cv.equal_tokens(48, 128) == 48 and cv.equal_tokens(256, 128) == 128
    with pytest.raises(ValueError):
        cv.equal_tokens(48, 128, 64)


# --------------------------------------------------------------------------- post as the unit


def test_paired_difference_counts_posts_not_replies():
    s = _scores(np.random.default_rng(2), posts=12, per=2)
    once = cv.paired_difference(s, "plain", "real", "mean_logprob")
    copies = pd.concat([s] * 5, ignore_index=True)  # five times the replies, the same posts
    five = cv.paired_difference(copies, "plain", "real", "mean_logprob")
    assert five["posts"] == once["posts"] == 12
    assert (five["lo"], five["hi"], five["p_post"]) == pytest.approx((once["lo"], once["hi"], once["p_post"]))


def test_sd_ratio_and_its_cluster_interval():
    rng = np.random.default_rng(3)
    s = _scores(rng, posts=60, per=8, shift={"real": 0.0, "plain": 0.0}, sd={"real": 0.8, "plain": 0.4})
    r, lo, hi = cv.sd_ratio(s, "real", "plain")
    assert lo < r < hi and lo > 1.0
    # all the spread between posts (replies to a post identical): fewer independent units, wider interval
    t = s.copy()
    t["mean_logprob"] = t.groupby(["post_id", "source"])["mean_logprob"].transform("mean")
    _, lo2, hi2 = cv.sd_ratio(t, "real", "plain")
    _, lo3, hi3 = cv.sd_ratio(pd.concat([t.assign(post_id=t["post_id"] + f"-{i}") for i in range(8)]), "real", "plain")
    assert hi2 - lo2 > hi3 - lo3  # same replies spread over 8x the posts: a narrower interval


def test_predictability_ratio():
    s = _scores(np.random.default_rng(4), posts=40, shift={"real": 0.0, "plain": 0.5, "own": 1.0})
    r, lo, hi = cv.predictability_ratio(s, "plain")
    assert r == pytest.approx(0.5, abs=0.1) and lo < 0.5 < hi
    c = cv.compare(s, "plain", "real", "mean_logprob")
    assert c["toward_own"] == pytest.approx(r) and "ks_p" not in c


# --------------------------------------------------------------------------- verdict


def _verdict_scores(rng, effect, posts, sd):
    s = _scores(rng, posts=posts, per=4, shift={"real": 0.0, "plain": effect, "humanlike": effect},
                sd={"real": sd, "plain": sd, "humanlike": sd}, temperature=1.0)
    # the same styles at the profile temperature, far more predictable: the verdict must ignore them
    hot = s[s["source"] != "real"].assign(temperature=0.7, mean_logprob_eq=lambda d: d["mean_logprob_eq"] + 5)
    return pd.concat([s, hot], ignore_index=True)


@pytest.mark.parametrize("effect,posts,sd,expect", [(0.8, 40, 0.3, "reproduces"), (0.0, 200, 0.1, "contradicts"),
                                                    (0.1, 6, 2.0, "inconclusive")])
def test_logprob_verdict_branches(effect, posts, sd, expect):
    v = cv.logprob_verdict(_verdict_scores(np.random.default_rng(5), effect, posts, sd), ["plain", "humanlike"],
                           n_boot=500)
    assert v.verdict == expect
    assert v.n == posts and v.mde > 0 and v.rule == cv.RULE
    assert abs(v.effect - effect) < 3 * sd  # the T=0.7 arm (+5) did not leak in


# --------------------------------------------------------------------------- temperature and controls


def test_controls_and_temperature_tables():
    rng = np.random.default_rng(6)
    s = _scores(rng, posts=20, shift={"real": 0.0, "plain": 0.5, "own": 1.0}, temperature=0.7)
    # the same replies at T=1, 0.3 nats/token less predictable
    t1 = s[s["source"] != "real"].assign(temperature=1.0, mean_logprob=lambda d: d["mean_logprob"] - 0.3,
                                         mean_logprob_eq=lambda d: d["mean_logprob_eq"] - 0.3)
    both = pd.concat([s, t1], ignore_index=True)
    both["n_tokens"] = rng.integers(5, 50, size=len(both))
    tt = cv.temperature_table(both, n_boot=200)
    assert set(tt.index) == {"real", "plain T=0.7", "own T=0.7", "plain T=1", "own T=1"}
    assert tt.loc["plain T=0.7", "minus_real"] - tt.loc["plain T=1", "minus_real"] == pytest.approx(0.3)
    ct = cv.controls_table(both, ["plain", "own"], 0.7, n_boot=200)
    assert set(ct.index.get_level_values("control")) == {"as first measured", "first L tokens",
                                                         "length as regressor", "first L tokens, T=1"}
    same_t = cv.controls_table(both[both["temperature"].isin([0.7]) | both["source"].eq("real")], ["plain"], 0.7,
                               n_boot=100)
    assert "first L tokens, T=1" not in set(same_t.index.get_level_values("control"))


# --------------------------------------------------------------------------- alignment at equal n


def test_equal_n_alignment_draws_the_same_n_per_source():
    rng = np.random.default_rng(7)
    base = rng.normal(size=(40 * 6, 16))
    posts_real = np.repeat([f"p{i}" for i in range(40)], 3)  # 3 real replies per post ...
    posts_syn = np.repeat([f"p{i}" for i in range(40)], 6)  # ... 6 synthetic ones
    feats = {"real": {"a": base[:120], "b": base[:120] @ np.linalg.qr(rng.normal(size=(16, 16)))[0]},
             "synthetic": {"a": base, "b": rng.normal(size=base.shape)}}
    long = al.equal_n_alignment(feats, {"real": posts_real, "synthetic": posts_syn}, ["a", "b"], k=5,
                                repeats=20, seed=0)
    assert long.groupby("repeat")["n"].nunique().eq(1).all()  # the same n for every source in a repeat
    assert long["n"].iloc[0] == 20 * 3
    summ = cv.alignment_summary(long)
    assert summ.loc["real", "mutual_knn"] == pytest.approx(1.0)  # a rotation of the same space
    assert abs(summ.loc["synthetic", "mutual_knn"] - summ.loc["synthetic", "chance"]) < 0.05
    assert summ.loc["synthetic", "diff_hi"] < 0


# --------------------------------------------------------------------------- which models score


def test_api_generator_is_skipped_and_only_local_models_score():
    cfg = config.load("paper")
    assert cfg.generator.startswith("gpt-")
    keep, skipped = cv.scoring_models(cfg, present=lambda name: name == cfg.scorer)
    assert keep == [cfg.scorer]
    assert cfg.generator in skipped and "API" in skipped[cfg.generator]
    assert not cv.has_local_weights("gpt-4o-mini")


def test_local_profile_scores_with_every_local_causal_lm():
    cfg = config.load("ci")
    keep, skipped = cv.scoring_models(cfg)
    assert keep[0] == cfg.scorer and cfg.generator in keep and not skipped
    assert cfg.encoder not in keep  # an encoder gives embeddings, not log-probs


def test_config_checks_the_log_prob_controls():
    with pytest.raises(config.ConfigError, match="logprob_equal_tokens"):
        config.load("ci", {"logprob_equal_tokens": 1000})
    with pytest.raises(config.ConfigError, match="t1_styles"):
        config.load("ci", {"t1_styles": ["nonsense"]})
    cfg = config.load("ci", {"logprob_equal_tokens": 16})
    from simlib import steps

    assert steps.equal_tokens(cfg) == 16
    assert steps.equal_tokens(config.load("ci", {"logprob_equal_tokens": 0})) == min(cfg.max_tokens,
                                                                                    cfg.max_response_tokens)


def test_synthetic_t1_asks_for_temperature_one_and_is_cached(tmp_path):
    """The temperature control's extra set, through an API-only generator (a stub of the OpenAI API)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from stub_openai import StubServer

    from simlib import steps

    posts = pd.DataFrame({"post_id": ["a", "b"], "title": ["AITA for x?", "AITA for y?"], "body": ["b1", "b2"],
                          "subreddit": ["AITAH", "AITAH"]})
    with StubServer() as stub:
        cfg = config.load("smoke", {"work_dir": str(tmp_path), "api_base_url": stub.base_url,
                                    "generator": "gpt-4o-mini", "temperature": 0.7, "t1_styles": ["plain"],
                                    "t1_samples": 2})
        assert steps.t1_sizes(cfg) == {"styles": ["plain"], "samples": 2, "extra": True}
        out = steps.synthetic_t1(cfg, posts)
        assert len(out) == 4 and set(out["source"]) == {"plain"} and (out["temperature"] == 1.0).all()
        # a post's two samples go as one request with n = 2
        assert [b.get("n") for b in stub.state.requests] == [2, 2]
        assert all(b["temperature"] == 1.0 for b in stub.state.requests)
        steps.synthetic_t1(cfg, posts)
        assert len(stub.state.requests) == 2  # cached in generations.jsonl, keyed by temperature
    assert not steps.t1_sizes(config.load("smoke", {"temperature": 1.0}))["extra"]
