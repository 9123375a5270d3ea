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
