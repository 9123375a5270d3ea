"""The reward experiment's design (simlib.train.examples) and its contrast statistic (simlib.findings.transfer)."""
import numpy as np
import pandas as pd
import pytest

from simlib.findings import claim, transfer
from simlib.measures import verdicts
from simlib.train import examples


class Words:
    """One token per whitespace-separated word (decode joins with spaces)."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}

    def decode(self, ids):
        return " ".join(ids)


def test_cap_keeps_whole_words_within_the_budget():
    tok = Words()
    assert examples.cap_tokens("a b c d e", tok, 3) == "a b"  # the 3rd token may be a partial word
    assert examples.cap_tokens("  a b  ", tok, 3) == "a b"
    assert examples.cap_tokens("longword", tok, 1) == "longword"


def test_cap_with_the_policy_tokenizer_is_within_budget_and_a_prefix():
    from transformers import AutoTokenizer

    from simlib.lm import weights

    tok = AutoTokenizer.from_pretrained(weights.resolve("smollm2-135m"))
    text = "NTA. Honestly your sister owes you an apology and a full tank of gas, and probably a lot more. " * 3
    cut = examples.cap_tokens(text, tok, 24)
    assert len(tok(cut, add_special_tokens=False)["input_ids"]) <= 24
    assert text.startswith(cut) and not text[len(cut)].isalnum()  # ends on a word boundary


def test_real_target_draw_is_seeded_and_per_post():
    texts = {"p": [f"reply {i}" for i in range(20)], "q": [f"other {i}" for i in range(20)]}
    a = examples.draw(texts, 4, seed=0)
    assert a == examples.draw(texts, 4, seed=0)
    assert a["p"] == examples.draw({"p": texts["p"]}, 4, seed=0)["p"]  # independent of other posts
    assert a["p"] != examples.draw(texts, 4, seed=1)["p"]
    assert a["p"] != texts["p"][:4]  # not the first replies in Reddit's ranking
    draws = [tuple(examples.draw(texts, 1, seed=s)["p"]) for s in range(200)]
    assert len(set(draws)) >= 15  # every reply can be drawn


def _prompts(ids):
    return pd.DataFrame({"post_id": ids, "prompt": [[{"role": "user", "content": f"post {i}"}] for i in ids]})


def test_paired_examples_share_ids_posts_and_order():
    targets = {"synthetic": {"a": ["s1", "s2"], "b": ["s3", "s4"], "c": ["s5"]},
               "real": {"a": ["r1", "r2"], "b": ["r3", "r4"], "c": ["r5", "r6"]}}
    recs, refs = examples.paired(_prompts(["b", "a", "c"]), targets, k=2)
    assert recs["post_id"].tolist() == ["b#0", "b#1", "a#0", "a#1"]  # c lacks 2 synthetic targets
    assert set(refs["synthetic"]) == set(refs["real"]) == set(recs["post_id"])
    assert refs["synthetic"]["a#1"] == ["s2"] and refs["real"]["a#1"] == ["r2"]  # one target each
    assert all(len(v) == 1 for kind in refs.values() for v in kind.values())


def test_design_probe_and_test_sets():
    targets = {"synthetic": {p: [f"s{p}{i}" for i in range(3)] for p in "abcd"},
               "real": {p: [f"r{p}{i}" for i in range(3)] for p in "abcd"},
               "policy_own": {p: [f"o{p}"] for p in "abcd"}}
    d = examples.design(_prompts(["a", "b", "c"]), _prompts(["d"]), targets, k=2, r=2, probe_posts=2,
                        eval_only=("policy_own",))
    assert d.n_examples == 6 and set(d.train_refs) == {"synthetic", "real"}
    assert d.probe["post_id"].tolist() == ["a", "b"]
    assert d.probe_refs["real"]["b"] == d.train_refs["real"]["b#0"] + d.train_refs["real"]["b#1"]  # all its targets
    assert d.test_refs["real"]["d"] == ["rd0", "rd1"] and d.test_refs["policy_own"]["d"] == ["od"]


def _evals(effect: float, n_posts=40, seeds=(0, 1, 2, 3), noise=0.03, seed=0):
    """Simulated paired evaluations: a synthetic run gains `effect` more than a real one."""
    rng = np.random.default_rng(seed)
    ids = [f"probe:p{i}" for i in range(n_posts)] + [f"test:t{i}" for i in range(10)]
    out = {}
    for s in seeds:
        base = {k: rng.normal(0.3, 0.05, len(ids)) for k in ("synthetic", "real")}
        out[("base", s)] = {"post_id": ids, "scores": {k: v.tolist() for k, v in base.items()}}
        run_shift = rng.normal(0, 0.005)  # runs of a seed differ a little
        for kind, gain in (("synthetic", 0.01 + effect), ("real", 0.01)):
            out[(kind, s)] = {"post_id": ids, "logprob_shift": [-0.1] * len(ids),
                              "scores": {k: (v + gain + run_shift + rng.normal(0, noise, len(ids))).tolist()
                                         for k, v in base.items()}}
    return out


def test_contrast_detects_a_known_effect_and_none_when_absent():
    found = claim.statistic(transfer.changes(_evals(0.03)), "reward")
    assert found["lo"] > 0 and found["effect"] == pytest.approx(0.03, abs=0.01)
    assert found["mde"] < 0.02 and found["n"] == 160 and found["seeds"] == 4
    assert claim.decide(transfer.changes(_evals(0.03)), "reward", 0.02).verdict == "reproduces"
    null = claim.statistic(transfer.changes(_evals(0.0, seed=1)), "reward")
    assert null["lo"] < 0 < null["hi"]
    assert claim.decide(transfer.changes(_evals(0.0, seed=1)), "reward", 0.02).verdict == "contradicts"
    # too little data: one seed, four posts, much noise -> neither side excluded
    weak = transfer.changes(_evals(0.0, n_posts=4, seeds=(0,), noise=0.2, seed=2))
    assert claim.decide(weak, "reward", 0.02).verdict == "inconclusive"


def test_changes_are_paired_and_movement_reads_the_shift():
    ev = _evals(0.0)
    ch = transfer.changes(ev)
    row = ch[(ch["trained_on"] == "real") & (ch["seed"] == 0) & (ch["post_id"] == "p0") & (ch["against"] == "real")]
    assert row["delta"].iloc[0] == pytest.approx(ev[("real", 0)]["scores"]["real"][0] - ev[("base", 0)]["scores"]["real"][0])
    mv = transfer.movement(ev)
    assert len(mv) == 8 and np.allclose(mv["kl_estimate"], 0.1)
    cells = transfer.cells(ch, "test", n_boot=200)
    assert set(cells.index) == {(t, a) for t in ("synthetic", "real") for a in ("synthetic", "real")}


def test_verdict_entry_matches_the_schema(tmp_path):
    v = claim.decide(transfer.changes(_evals(0.03)), "reward", 0.02)
    entry = verdicts.record(tmp_path, "reward", v)
    assert verdicts.load(tmp_path)["reward"] == entry and "margin 0.02" in entry["rule"]


def test_projection_from_components_shrinks_with_seeds_and_posts():
    from simlib.findings import claim

    ch = transfer.changes(_evals(0.0, seed=3))
    proj = claim.projection(ch, "reward", [20, 40, 80], [2, 4, 8], steps_per_run=10, target=0.02)
    assert len(proj) == 9 and proj["grpo_steps"].max() == 160
    at = proj.set_index(["posts", "seeds"])["mde"]
    assert at[(80, 8)] < at[(40, 4)] < at[(20, 2)]
    assert (proj["reaches_margin"] == (proj["mde"] <= 0.02)).all()


def test_level_gap_reads_test_posts_only_and_warns_of_nothing():
    import warnings

    ev = _evals(0.0)
    for (kind, s), e in ev.items():  # an evaluation-only kind: no reference on the probe posts
        e["scores"]["policy_own"] = [float("nan") if p.startswith("probe:") else 0.5 for p in e["post_id"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gap = transfer.level_gap(ev, "policy_own", "real", n_boot=200)
    assert gap["posts"] == 10 and np.isfinite(gap["effect"])
