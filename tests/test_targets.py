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


def _with_candidate(tight_candidate: bool):
    t, e, lp = _table(False)
    extra, emb, lps = [], [], []
    rng = np.random.default_rng(1)
    for p in sorted(set(t["post_id"])):
        centre = e[t.index[t["post_id"] == p][0]]
        for i in range(4):
            extra.append({"post_id": p, "source": "policy_own",
                          "text": f"same words here {p}" if tight_candidate else f"own {p} {i} w{rng.integers(1e6)}"})
            # varied: no shared centre, so the candidate's replies are less alike than the real ones
            emb.append(centre + rng.normal(scale=0.05, size=e.shape[1]) if tight_candidate
                       else rng.normal(size=e.shape[1]))
            lps.append(-1.0 if tight_candidate else -3.0)
    t2 = pd.concat([t, pd.DataFrame(extra)], ignore_index=True)
    return t2, np.vstack([e, np.array(emb)]), pd.concat([lp, pd.DataFrame(extra).assign(mean_logprob=lps)],
                                                         ignore_index=True)


def test_candidate_rows_leave_the_targets_comparison_unchanged():
    t, e, lp = _table(False)
    alone = targets.homogeneity(t, e, lp, n_boot=300)
    t2, e2, lp2 = _with_candidate(True)
    both = targets.homogeneity(t2, e2, lp2, n_boot=300)
    pd.testing.assert_frame_equal(alone, both)
    cand = targets.homogeneity(t2, e2, lp2, n_boot=300, kind="policy_own")
    assert cand.loc["repetition", "lo"] > 0 and cand.loc["repetition", "synthetic"] > alone.loc["repetition", "synthetic"]


def test_candidate_sentence_weighs_homogeneity_against_self_similarity():
    t2, e2, lp2 = _with_candidate(True)
    cand = targets.homogeneity(t2, e2, lp2, n_boot=300, kind="policy_own")
    costly = targets.candidate_sentence(cand, {"effect": 0.06}, 0.03, "smollm2", "gemma")
    assert "are more homogeneous" in costly and "more than the margin" in costly and "stay gemma's" in costly
    cheap = targets.candidate_sentence(cand, {"effect": 0.01}, 0.03, "smollm2", "gemma")
    assert "within the margin" in cheap and "better writer" in cheap
    t3, e3, lp3 = _with_candidate(False)
    varied = targets.homogeneity(t3, e3, lp3, n_boot=300, kind="policy_own")
    s = targets.candidate_sentence(varied, {"effect": 0.01}, 0.03, "smollm2", "gemma")
    assert "not more homogeneous" in s and "stay gemma's" in s
    assert "not measured" in targets.candidate_sentence(None, None, 0.03, "smollm2", "gemma")
