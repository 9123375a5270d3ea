"""The homogeneity check of the reward chapter's targets (simlib.findings.targets)."""
import numpy as np
import pandas as pd

from simlib.findings import targets


def _table(same_synthetic: bool, n_posts=12, k=4, seed=0):
    rng = np.random.default_rng(seed)
    rows, emb, lp = [], [], []
    for p in range(n_posts):
        centre = rng.normal(size=8)
        for src in ("real", "synthetic"):
            for i in range(k):
                tight = src == "synthetic" and same_synthetic
                rows.append({"post_id": f"p{p}", "source": src,
                             "text": f"same words here {p}" if tight else f"reply {p} {i} {src} word{rng.integers(1e6)}"})
                emb.append(centre + rng.normal(scale=0.05 if tight else 1.0, size=8))
                lp.append(-1.0 if tight else -3.0 + rng.normal(scale=0.1))
    table = pd.DataFrame(rows)
    return table, np.array(emb), table.assign(mean_logprob=lp)


def test_homogeneous_synthetic_targets_read_as_predicted():
    t, e, lp = _table(True)
    h = targets.homogeneity(t, e, lp, n_boot=300)
    assert h.loc["repetition", "lo"] > 0 and h.loc["distinct_2", "hi"] < 0 and h.loc["mean_logprob", "lo"] > 0
    s = targets.sentence(h, scorer_wrote_them=True)
    assert "are more homogeneous" in s and "wrote these synthetic targets itself" in s
    assert "lack finding 1's gap" not in s


def test_varied_synthetic_targets_are_said_plainly():
    t, e, lp = _table(False)
    h = targets.homogeneity(t, e, lp, n_boot=300)
    s = targets.sentence(h, scorer_wrote_them=False)
    assert "are not" in s and "lack finding 1's gap" in s and "wrote these" not in s
