"""The crossed post x seed decomposition, the t interval, the MDE projection and TOST
(simlib.measures.power), and the reward chapter's four statistics and their verdicts
(simlib.findings.claim) on simulated runs."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from simlib.measures import power, verdicts


def _crossed(rng, posts, seeds, post=0.0, seed=0.0, res=1.0, mu=0.0):
    a = rng.normal(0, np.sqrt(post), (posts, 1))
    b = rng.normal(0, np.sqrt(seed), (1, seeds))
    return mu + a + b + rng.normal(0, np.sqrt(res), (posts, seeds))


def test_decomposition_recovers_known_components():
    rng = np.random.default_rng(0)
    est = np.array([list(power.decompose(_crossed(rng, 60, 30, post=0.5, seed=0.3, res=1.0)).as_dict().values())
                    for _ in range(40)]).mean(axis=0)
    assert est == pytest.approx([0.5, 0.3, 1.0], rel=0.12)


def test_decomposition_drops_incomplete_posts_and_flags_one_seed():
    x = np.array([[1.0, 2.0], [np.nan, 4.0], [5.0, 6.0]])
    assert power.decompose(x).posts == 2
    one = power.decompose(np.array([[1.0], [2.0], [4.0]]))
    assert np.isnan(one.seed) and one.residual > 0
    assert np.isnan(power.interval(np.array([[1.0], [2.0], [4.0]]))["lo"])


def test_t_quantile_when_seeds_are_few():
    rng = np.random.default_rng(1)
    few = power.interval(_crossed(rng, 40, 3, seed=1.0, res=0.1))
    assert few["df"] < 4  # the seed term dominates: df near seeds - 1
    half = (few["hi"] - few["lo"]) / 2
    assert half == pytest.approx(stats.t.ppf(0.975, few["df"]) * few["se"])
    assert half > 1.5 * stats.norm.ppf(0.975) * few["se"]
    many = power.interval(_crossed(rng, 40, 40, post=1.0, seed=0.0, res=1.0))
    assert many["df"] > 30  # a post term dominates: near posts - 1, far from seeds-few territory


@pytest.mark.parametrize("design", [(24, 4), (48, 8)])
def test_projected_mde_matches_simulation(design):
    posts, seeds = design
    true = power.Components(post=0.2, seed=0.05, residual=1.0, posts=posts, seeds=seeds, mean=0.0,
                            ms_post=np.nan, ms_seed=np.nan, ms_res=np.nan)
    proj = power.project(true, [posts], [seeds]).iloc[0]
    rng = np.random.default_rng(2)
    means, hits = [], []
    for _ in range(1500):
        x = _crossed(rng, posts, seeds, post=0.2, seed=0.05, res=1.0, mu=proj["mde"])
        iv = power.interval(x)
        means.append(iv["effect"])
        hits.append(iv["lo"] > 0)
    assert np.std(means) == pytest.approx(proj["se"], rel=0.10)
    assert np.mean(hits) == pytest.approx(0.8, rel=0.10)  # the MDE is the effect seen 80% of the time


def test_projection_shrinks_and_reaching_finds_seeds():
    c = power.Components(post=0.0, seed=1e-3, residual=1.3e-2, posts=24, seeds=4, mean=0.0,
                         ms_post=np.nan, ms_seed=np.nan, ms_res=np.nan)
    table = power.project(c, [24, 48], [4, 8])
    assert table.set_index(["posts", "seeds"]).loc[(48, 8), "mde"] < table.set_index(["posts", "seeds"]).loc[(24, 4), "mde"]
    s = power.reaching(c, 0.05, 48)
    assert s is not None and power.t_factor(power.satterthwaite_df(c, 48, s)) * np.sqrt(
        power.var_of_mean(c, 48, s)) <= 0.05
    assert power.reaching(c, 1e-6, 48, max_seeds=8) is None


def test_tost_equivalent_and_not_shown():
    assert power.tost(0.002, 0.004, 20, 0.02)["equivalent"]
    wide = power.tost(0.002, 0.02, 20, 0.02)
    assert not wide["equivalent"] and wide["lo90"] < -0.02
    assert not power.tost(0.03, 0.002, 20, 0.02)["equivalent"]  # precise, but outside the margin
    assert not power.tost(0.0, float("nan"), 20, 0.02)["equivalent"]


def test_no_gain_verdict_branches():
    kw = {"margin": 0.02, "n": 10, "rule": "r", "se": 0.01, "df": 20}
    assert verdicts.decide_no_gain(0.001, -0.004, 0.006, equivalent=True, **kw).verdict == "reproduces"
    assert verdicts.decide_no_gain(0.05, 0.03, 0.07, equivalent=False, **kw).verdict == "contradicts"
    assert verdicts.decide_no_gain(0.02, 0.0, 0.04, equivalent=False, **kw).verdict == "inconclusive"
    assert verdicts.decide_no_gain(0.0, np.nan, np.nan, equivalent=False, **kw).verdict == "inconclusive"


# --------------------------------------------------------------------------- the claim's parts
def _runs(gains, n_posts=30, n_test=30, seeds=(0, 1, 2, 3), noise=0.01, seed_sd=0.002, seed=0):
    """Simulated paired evaluations: the trained policy of kind t changes its score against kind a by
    gains.get((t, a, section), 0) plus post x seed noise and a per-run shift."""
    rng = np.random.default_rng(seed)
    ids = [f"probe:p{i}" for i in range(n_posts)] + [f"test:t{i}" for i in range(n_test)]
    section = ["probe"] * n_posts + ["test"] * n_test
    out = {}
    for s in seeds:
        base = {k: rng.normal(0.3, 0.05, len(ids)) for k in ("synthetic", "real")}
        out[("base", s)] = {"post_id": ids, "scores": {k: v.tolist() for k, v in base.items()}}
        for t in ("synthetic", "real"):
            shift = rng.normal(0, seed_sd)
            out[(t, s)] = {"post_id": ids, "logprob_shift": [-0.1] * len(ids), "scores": {
                a: (v + np.array([gains.get((t, a, sec), 0.0) for sec in section]) + shift
                    + rng.normal(0, noise, len(ids))).tolist() for a, v in base.items()}}
    return out


def _verdict(gains, key, margin=0.02, **kw):
    from simlib.findings import claim, transfer

    return claim.decide(transfer.changes(_runs(gains, **kw)), key, margin)


@pytest.mark.parametrize("key,effect_gains,null_gains", [
    ("reward", {("synthetic", "synthetic", "probe"): 0.04}, {}),
    ("reward:inflation", {("synthetic", "synthetic", "test"): 0.04}, {("synthetic", "synthetic", "test"): 0.0}),
    ("reward:transfer", {("real", "real", "test"): 0.04}, {("real", "real", "test"): 0.01,
                                                           ("synthetic", "real", "test"): 0.01}),
])
def test_parts_reproduce_with_an_effect_and_are_contradicted_without(key, effect_gains, null_gains):
    v = _verdict(effect_gains, key)
    assert v.verdict == "reproduces" and v.effect == pytest.approx(0.04, abs=0.01)
    assert _verdict(null_gains, key).verdict == "contradicts"
    weak = _verdict(effect_gains, key, n_posts=4, n_test=4, seeds=(0, 1), noise=0.2, seed_sd=0.05)
    assert weak.verdict == "inconclusive" and weak.mde > 0.04


def test_inflation_cancels_how_far_the_run_moved():
    from simlib.findings import claim, transfer

    # the synthetic run moves a lot against both kinds alike: no inflation
    ch = transfer.changes(_runs({("synthetic", "synthetic", "test"): 0.1, ("synthetic", "real", "test"): 0.1}))
    assert claim.statistic(ch, "reward:inflation")["effect"] == pytest.approx(0.0, abs=0.005)


def test_real_gain_verdict_branches():
    assert _verdict({}, "reward:real-gain").verdict == "reproduces"  # TOST: within +-margin
    big = _verdict({("real", "real", "probe"): 0.06}, "reward:real-gain")
    assert big.verdict == "contradicts" and big.ci[0] > 0.02
    near = _verdict({("real", "real", "probe"): 0.02}, "reward:real-gain")
    assert near.verdict == "inconclusive"  # straddles the margin: neither shown
    noisy = _verdict({}, "reward:real-gain", seeds=(0, 1), noise=0.1, seed_sd=0.02)
    assert noisy.verdict == "inconclusive"  # no significant gain, but equivalence not shown


def test_parts_sentence_names_each_part_by_its_verdict():
    from simlib.findings import claim

    e = {"reward": {"verdict": "inconclusive"}, "reward:inflation": {"verdict": "inconclusive"},
         "reward:transfer": {"verdict": "reproduces"}, "reward:real-gain": {"verdict": "contradicts"}}
    s = claim.parts_sentence(e)
    assert "weaker transfer of synthetic training to real replies (b) holds" in s
    assert "no meaningful gain from real targets (c) is contradicted" in s
    assert "cannot tell for the larger gain on synthetic targets and reward inflation (a)" in s
    assert "not recorded" in claim.parts_sentence({"reward": {"verdict": "reproduces"}})
    assert claim.parts_sentence({}).startswith("No part")


def test_margin_rule():
    from simlib.findings import claim

    m = claim.margin(0.40, 0.32, 0.25)
    assert m["margin"] == pytest.approx(0.02) and m["headroom"] == pytest.approx(0.08)
    assert np.isnan(claim.margin(0.30, 0.32, 0.25)["margin"])
    with pytest.raises(ValueError, match="1.5"):
        claim.margin(0.4, 0.3, 1.5)


def test_power_sentence_is_chosen_by_the_numbers():
    from simlib.findings import claim, transfer

    ch = transfer.changes(_runs({}, seeds=(0, 1, 2, 3)))
    d = claim.decomposition(ch)
    proj = claim.projection(ch, "reward", [30, 120], [4, 16], 10, 0.02)
    assert "it reaches the margin" in claim.power_sentence(d, proj, 0.02)
    tight = claim.power_sentence(d, claim.projection(ch, "reward", [30, 120], [4, 16], 10, 1e-3), 1e-3)
    assert "does not reach" in tight and "largest" in tight
    one = transfer.changes(_runs({}, seeds=(0,)))
    assert "single seed" in claim.power_sentence(claim.decomposition(one),
                                                 claim.projection(one, "reward", [30], [2], 10, 0.02), 0.02)
