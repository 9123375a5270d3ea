"""The shared verdict rule, its MDE and verdicts.json (simlib.measures.verdicts)."""
import json

import numpy as np
import pytest

from simlib.measures import verdicts as V


@pytest.mark.parametrize("lo,hi,expected", [
    (0.01, 0.05, "reproduces"),     # above zero
    (-0.03, 0.01, "contradicts"),   # rules out the margin (0.02)
    (-0.08, -0.02, "contradicts"),  # the opposite sign
    (-0.04, 0.06, "inconclusive"),  # covers zero and the margin: too little power to say
    (float("nan"), float("nan"), "inconclusive"),
])
def test_three_branches(lo, hi, expected):
    v = V.decide((lo + hi) / 2 if np.isfinite(lo) else 0.0, lo, hi, margin=0.02, n=10, rule="r")
    assert v.verdict == expected


def test_mde_is_2_8_standard_errors():
    v = V.decide(0.0, -0.0196, 0.0196, margin=0.05, n=5, rule="r")
    assert v.mde == pytest.approx(0.028, rel=1e-2)


def test_two_way_bootstrap_detects_a_known_effect_and_none_when_absent():
    rng = np.random.default_rng(0)
    null = rng.normal(0.0, 0.05, size=(40, 4))
    effect = rng.normal(0.04, 0.05, size=(40, 4))
    m0, lo0, hi0, se0 = V.two_way_bootstrap(null, n_boot=500)
    m1, lo1, hi1, se1 = V.two_way_bootstrap(effect, n_boot=500)
    assert lo0 < 0 < hi0 and lo1 > 0
    # 160 cells with sd 0.05: the SE of the mean is about 0.05 / sqrt(160) ~ 0.004
    assert 0.002 < se1 < 0.008 and V.mde(se1) < 0.025


def test_two_way_bootstrap_counts_seed_variance():
    rng = np.random.default_rng(1)
    seed_shift = np.array([0.1, -0.1, 0.05, -0.05])
    x = rng.normal(0, 0.01, size=(50, 4)) + seed_shift
    _, _, _, se_two = V.two_way_bootstrap(x, n_boot=500)
    _, _, _, se_rows = V.two_way_bootstrap(x.mean(axis=1), n_boot=500)
    assert se_two > 5 * se_rows  # posts alone would hide how much the runs differ


def test_tost_branches():
    assert V.tost(-0.01, 0.01, 0.02)
    assert not V.tost(-0.01, 0.03, 0.02)
    assert not V.tost(float("nan"), 0.0, 0.02)


def test_record_merges_and_validates(tmp_path):
    V.record(tmp_path, "reward", V.decide(0.03, 0.01, 0.05, margin=0.02, n=12, rule="contrast > 0"))
    V.record(tmp_path, "gap", {"verdict": "inconclusive", "effect": 0.1, "ci": [-0.1, 0.3], "mde": 0.5,
                               "n": 8, "rule": "x"})
    data = json.loads((tmp_path / "verdicts.json").read_text())
    assert set(data) == {"reward", "gap"}
    assert data["reward"]["verdict"] == "reproduces" and data["reward"]["n"] == 12
    with pytest.raises(ValueError):
        V.record(tmp_path, "bad", {"verdict": "does not reproduce", "effect": 0, "ci": [0, 0], "mde": 0,
                                   "n": 1, "rule": "x"})
    with pytest.raises(ValueError):
        V.decide(0, -1, 1, margin=0, n=1, rule="x")


def test_table_can_show_only_the_expected_findings():
    from simlib.measures import verdicts as vd

    entries = {k: {"verdict": "inconclusive", "effect": 0.01, "ci": [-0.1, 0.1], "mde": 0.2, "n": 8, "rule": "r"}
               for k in ("reward", "gap")}
    assert len(vd.table(entries, ("reward",))) == 2
    assert len(vd.table(entries, ("reward",), others=False)) == 1
