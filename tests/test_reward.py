"""BERTScore reward: agreement with bert_score, identity, reference cache, TRL signature."""
from __future__ import annotations

import doctest

import pytest

import simlib.measures.reward as reward_mod
from simlib.measures.reward import BertScoreReward, completion_text, encoder_profile

REFS = {
    "p1": ["NTA. Your sister had no right to take the car without asking.",
           "YTA, honestly you should have told her earlier.",
           "ESH"],
    "p2": ["Talk to your boss before you quit, it might be a misunderstanding."],
    "p3": ["I would never lend my car to anyone, family or not.", "Info: did she pay for gas?"],
}
CANDS = [
    ("p1", "You are not the asshole, she should have asked first."),
    ("p1", "YTA."),
    ("p2", "Quit. Nobody deserves to be yelled at like that at work!"),
    ("p2", "Talk to your boss before you quit, it might be a misunderstanding."),
    ("p3", "lol what a mess"),
    ("p3", "Did she at least fill up the tank?"),
]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread: on a 2-core machine shared with other jobs, torch's default of 2
    spinning OpenMP threads makes these small models several times slower (see the report)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reward():
    return BertScoreReward("minilm-l6", REFS, aggregate="max")


def bert_score_f1(scorer, cand: str, ref: str) -> float:
    """bert_score's own F1 for one pair (one pair per call: no padding of the similarity matrix)."""
    return float(scorer.score([cand], [ref])[2][0])


def test_max_matches_bert_score(reward):
    scores = reward([c for _, c in CANDS], post_id=[p for p, _ in CANDS])
    expected = [max(bert_score_f1(reward.scorer, c, ref) for ref in REFS[p]) for p, c in CANDS]
    assert scores == pytest.approx(expected, abs=1e-6)
    assert all(-1 - 1e-6 <= s <= 1 + 1e-6 for s in scores)
    # bert_score's multi-reference form (best over a candidate's list) agrees on these pairs, where
    # no token's similarities are all negative (see the module docstring for the padding caveat)
    idx = [1, 2, 3, 5]
    _, _, f = reward.scorer.score([CANDS[i][1] for i in idx], [[REFS[CANDS[i][0]][0]] for i in idx])
    assert [reward.score_all(CANDS[i][1], CANDS[i][0])[0] for i in idx] == pytest.approx(f.tolist(), abs=1e-6)


def test_each_reference_and_mean_match_bert_score(reward):
    mean_reward = BertScoreReward("minilm-l6", REFS, aggregate="mean")
    for pid, cand in CANDS:
        expected = [bert_score_f1(reward.scorer, cand, ref) for ref in REFS[pid]]
        assert reward.score_all(cand, pid) == pytest.approx(expected, abs=1e-6)
        assert mean_reward.score([cand], [pid])[0] == pytest.approx(sum(expected) / len(expected), abs=1e-6)


def test_identical_strings_score_one(reward):
    texts = [t for refs in REFS.values() for t in refs]
    own = BertScoreReward("minilm-l6", {str(i): [t] for i, t in enumerate(texts)})
    scores = own(texts, post_id=[str(i) for i in range(len(texts))])
    assert scores == pytest.approx([1.0] * len(texts), abs=1e-5)


def test_doctests():
    result = doctest.testmod(reward_mod)
    assert result.attempted >= 2 and result.failed == 0


def test_reference_embeddings_computed_once(monkeypatch):
    r = BertScoreReward("minilm-l6", REFS)
    calls = []
    orig = r._encode

    def counting(texts):
        calls.append(list(texts))
        return orig(texts)

    monkeypatch.setattr(r, "_encode", counting)
    batch = [c for _, c in CANDS]
    pids = [p for p, _ in CANDS]
    first = r(batch, post_id=pids)
    for _ in range(3):  # later GRPO steps: same posts, new completions
        assert r(batch, post_id=pids) == first
    n_refs = sum(len(v) for v in REFS.values())
    ref_calls = [c for c in calls if c in list(REFS.values())]
    assert sorted(map(tuple, ref_calls)) == sorted(map(tuple, REFS.values()))  # each post's once
    assert len(calls) == len(REFS) + 4  # the reference groups, then one candidate pass per call
    assert r.stats["reference_texts"] == n_refs
    assert r.stats["candidate_texts"] == 4 * len(batch)


def test_trl_signature_and_chat_completions(reward):
    assert reward.__name__ == "bertscore_max"
    texts = [c for _, c in CANDS]
    pids = [p for p, _ in CANDS]
    chat = [[{"role": "assistant", "content": t}] for t in texts]
    # TRL passes prompts, completion_ids, trainer_state, log_extra, log_metric, ... as keywords
    got = reward(prompts=[[{"role": "user", "content": "x"}]] * len(texts), completions=chat,
                 completion_ids=[[1]] * len(texts), post_id=pids, trainer_state=None,
                 log_extra=lambda *a: None, log_metric=lambda *a: None)
    assert got == pytest.approx(reward(texts, post_id=pids), abs=1e-12)
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"}]}]) == "a"


def test_empty_completion_scores_zero(reward):
    assert reward(["", "   "], post_id=["p1", "p2"]) == [0.0, 0.0]


def test_lru_bound_and_missing_post():
    r = BertScoreReward("minilm-l6", REFS, max_cached_posts=1)
    r(["a", "b"], post_id=["p1", "p2"])
    assert len(r._cache) == 1
    with pytest.raises(KeyError):
        r(["a"], post_id=["nope"])
    with pytest.raises(ValueError):
        BertScoreReward("minilm-l6", REFS, aggregate="median")


def test_encoder_profiles():
    local = encoder_profile("minilm-l6")
    assert local["num_layers"] == 6 and local["rescale_with_baseline"] is False
    paper = encoder_profile("microsoft/deberta-xlarge-mnli")  # only the settings; nothing is loaded
    assert paper == {"model_type": "microsoft/deberta-xlarge-mnli", "num_layers": 40,
                     "rescale_with_baseline": True, "lang": "en"}
    with pytest.raises(ValueError):
        encoder_profile("minilm-l6", rescale_with_baseline=True)  # no baseline exists for it
