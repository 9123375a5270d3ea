"""The log-prob judge (simlib.measures.judge): every item gets a label, calibration, validation statistics."""
from __future__ import annotations

import doctest
import importlib.util

import numpy as np
import pandas as pd
import pytest

from simlib.measures import judge
from simlib.measures.aita import parse_verdict
from simlib.measures.judge import QUESTIONS, choose, cohen_kappa, judge_requests, validate_stance

ITEMS = [{"item_id": "a", "title": "AITA for X?", "text": "NTA, she was rude."},
         {"item_id": "b", "title": "AITA for X?", "text": "YTA honestly, you owed her that."},
         {"item_id": "c", "title": "AITA for Y?", "text": "lol what a story"}]


def test_doctests():
    assert doctest.testmod(judge).failed == 0


def test_requests_cover_every_label_and_one_content_free_reply_per_title():
    reqs = judge_requests(ITEMS)
    n_labels = sum(len(q.labels) for q in QUESTIONS)
    ids = [r.post_id for r in reqs]
    assert len(reqs) == (len(ITEMS) + 2) * n_labels  # two distinct titles
    assert ids.count("content-free:AITA for X?") == n_labels
    # one prompt per item and question (the scorer reads it once), and the judge never sees a verdict
    assert len({r.prompt for r in reqs if r.post_id == "a"}) == len(QUESTIONS)
    only = judge_requests(ITEMS, questions=("stance",))
    assert {r.response_id.split(":")[0] for r in only} == {"stance"}
    assert all(parse_verdict(r.prompt) is None for r in reqs)


def _fake_scores(reqs, item_scores):
    rows = []
    for r in reqs:
        q, lab = r.response_id.split(":")
        base = -5.0 if r.post_id.startswith("content-free") else item_scores.get((r.post_id, lab), -6.0)
        rows.append({"post_id": r.post_id, "response_id": r.response_id, "sum_logprob": base})
    return pd.DataFrame(rows)


def test_every_item_gets_one_label_per_question():
    reqs = judge_requests(ITEMS)
    out = choose(_fake_scores(reqs, {("a", "NTA"): -1.0, ("b", "YTA"): -1.0}), {i["item_id"]: i["title"] for i in ITEMS})
    assert list(out["item_id"]) == ["a", "b", "c"]
    assert out["stance"].isin(judge.STANCES).all() and out["register"].isin(judge.REGISTERS).all()
    assert list(out["stance"][:2]) == ["NTA", "YTA"]


def test_calibration_removes_a_label_prior():
    reqs = judge_requests(ITEMS[:1])
    s = _fake_scores(reqs, {("a", "NTA"): -2.0, ("a", "YTA"): -3.0})
    # the model says "NTA" after anything: its content-free score is higher still
    s.loc[(s["post_id"] == "content-free:AITA for X?") & (s["response_id"] == "stance:NTA"), "sum_logprob"] = -0.5
    out = choose(s, {"a": "AITA for X?"})
    assert out.loc[0, "stance"] == "YTA"  # YTA rose most above its prior
    assert out.loc[0, "stance_margin"] > 0


def test_cohen_kappa_matches_a_hand_count():
    a = ["x", "x", "x", "y", "y", "z"]
    b = ["x", "x", "y", "y", "z", "z"]
    po, pe = 4 / 6, (3 / 6) * (2 / 6) + (2 / 6) * (2 / 6) + (1 / 6) * (2 / 6)
    assert cohen_kappa(a, b) == pytest.approx((po - pe) / (1 - pe))
    if importlib.util.find_spec("sklearn"):
        from sklearn.metrics import cohen_kappa_score

        assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))


def test_validate_stance_reports_accuracy_kappa_and_the_majority_bar():
    truth = pd.Series(["NTA"] * 8 + ["YTA"] * 4 + [None] * 3)
    posts = pd.Series([f"p{i % 5}" for i in range(15)])
    perfect = validate_stance(truth.fillna("NTA"), truth, posts, n_boot=200)
    assert perfect["n"] == 12 and perfect["accuracy"] == 1.0 and perfect["kappa"] == 1.0
    assert perfect["majority"] == pytest.approx(8 / 12) and perfect["majority_label"] == "NTA"
    always = validate_stance(pd.Series(["NTA"] * 15), truth, posts, n_boot=200)
    assert always["accuracy"] == pytest.approx(8 / 12) and always["kappa"] == 0.0  # no better than chance
    assert always["acc_lo"] <= always["accuracy"] <= always["acc_hi"]


@pytest.mark.slow
def test_gemma_judge_labels_every_fixture(tmp_path):
    """With the real judge model, every fixture gets a label of the set (parse rate 1)."""
    pytest.importorskip("transformers")
    from simlib.lm.logprob import score_cached

    try:
        reqs = judge_requests(ITEMS)
        scored = score_cached(reqs, tmp_path / "judge.jsonl", "gemma3-270m", max_response_tokens=16)
    except Exception as exc:  # the model package is not installed here
        pytest.skip(f"gemma3-270m unavailable: {exc}")
    out = choose(pd.DataFrame(scored), {i["item_id"]: i["title"] for i in ITEMS})
    assert len(out) == len(ITEMS)
    assert out["stance"].isin(judge.STANCES).mean() == 1.0
    assert out["register"].isin(judge.REGISTERS).mean() == 1.0
    assert np.isfinite(out["stance_margin"]).all()
