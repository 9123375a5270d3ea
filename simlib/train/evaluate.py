"""Evaluating a policy on fixed prompts, paired with the base policy (the reward experiment).

One call samples ``n`` replies to each prompt with fixed seeds and scores them by BERTScore F1
against every kind of reference (e.g. the example's real target, its synthetic target). With the same
``seed``, the base policy draws from the same random streams as a trained one, so their per-prompt
difference is a paired change: the sampling noise they share cancels.

``shift_of`` (the base policy's replies) also measures how far training moved the policy: the mean
token log-prob of the base replies under the evaluated model minus under the base model. Its negative
estimates the per-token KL divergence KL(base ‖ trained) on those prompts.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

__all__ = ["evaluate_policy", "mean_logprobs", "sample_policy", "score_replies"]


def mean_logprobs(model: Any, tokenizer: Any, prompts: Sequence[Any], replies: Sequence[Sequence[str]],
                  max_tokens: int, batch_size: int = 16) -> list[float]:
    """Mean token log-prob of each prompt's ``replies`` under ``model`` (one value per prompt:
    the mean over its replies of their per-token means); NaN for a prompt without scorable replies."""
    from simlib.lm.logprob import ScoreRequest, score

    reqs, owner = [], []
    for i, (prompt, rs) in enumerate(zip(prompts, replies)):
        text = tokenizer.apply_chat_template(_messages(prompt), tokenize=False, add_generation_prompt=True)
        for j, r in enumerate(rs):
            if r.strip():
                reqs.append(ScoreRequest(post_id=str(i), response_id=str(j), prompt=text, response=r))
                owner.append(i)
    out: list[list[float]] = [[] for _ in prompts]
    for i, s in zip(owner, score(reqs, tokenizer, model, batch_size=batch_size, max_response_tokens=max_tokens)):
        if s["n_tokens"]:
            out[i].append(s["mean_logprob"])
    return [sum(v) / len(v) if v else math.nan for v in out]


def _messages(prompt: Any) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def sample_policy(model_path: str, prompts: Sequence[Any], *, n: int, max_new_tokens: int, seed: int,
                  temperature: float, dtype: str = "float32", max_rows: int = 96,
                  shift_of: Sequence[Sequence[str]] | None = None,
                  base_logprobs: Sequence[float] | None = None,
                  logprob_rows: Sequence[int] | None = None) -> dict[str, Any]:
    """``n`` replies to each prompt from the generator streams of ``seed`` (the same streams for the
    base and every trained policy). Without ``shift_of``, also their mean token log-prob under the
    policy (``self_logprob``: the base policy's, which a trained one's shift is measured against);
    with ``shift_of``/``base_logprobs`` (the base policy's ``responses``/``self_logprob``), the
    per-prompt ``logprob_shift`` of the base replies instead. Either is computed on the prompts of
    ``logprob_rows`` only (default all; NaN elsewhere), since each reads those prompts once more."""
    from simlib.train import generate_responses, load_policy

    tok, model = load_policy(model_path, dtype)
    responses = generate_responses(model_path, list(prompts), n=n, max_new_tokens=max_new_tokens, seed=seed,
                                   temperature=temperature, model=model, tokenizer=tok, max_rows=max_rows)
    rows = list(range(len(prompts))) if logprob_rows is None else list(logprob_rows)

    def on_rows(replies: Sequence[Sequence[str]]) -> list[float]:
        got = dict(zip(rows, mean_logprobs(model, tok, [prompts[i] for i in rows], [replies[i] for i in rows],
                                           max_new_tokens)))
        return [got.get(i, math.nan) for i in range(len(prompts))]

    result: dict[str, Any] = {"responses": responses}
    if shift_of is None:
        result["self_logprob"] = on_rows(responses)
    elif base_logprobs is not None:
        result["logprob_shift"] = [a - b for a, b in zip(on_rows(shift_of), base_logprobs)]
    return result


def score_replies(responses: Sequence[Sequence[str]], post_ids: Sequence[str],
                  references: Mapping[str, Mapping[str, Sequence[str]]], encoder: str) -> dict[str, list[float]]:
    """Per prompt and kind of reference: the mean over its replies of their F1 averaged over that
    post's references of the kind (one reference per training example gives the study's reward);
    NaN where a kind has no reference for the post (evaluation-only kinds on probe posts)."""
    from simlib.measures.reward import BertScoreReward

    keyed = {f"{kind}|{pid}": list(texts) for kind, refs in references.items() for pid, texts in refs.items()}
    scorer = BertScoreReward(encoder, keyed, aggregate="mean")
    out: dict[str, list[float]] = {}
    for kind, refs in references.items():
        has = [bool(refs.get(p)) for p in post_ids]
        flat = iter(scorer.score([c for h, rs in zip(has, responses) if h for c in rs],
                                 [f"{kind}|{p}" for h, p, rs in zip(has, post_ids, responses) if h for _ in rs]))
        per = [[next(flat) for _ in rs] if h else [] for h, rs in zip(has, responses)]
        out[kind] = [sum(v) / len(v) if v else math.nan for v in per]
    return out


def evaluate_policy(model_path: str, prompts: Sequence[Any], post_ids: Sequence[str],
                    references: Mapping[str, Mapping[str, Sequence[str]]], *, encoder: str, **sampling: Any) -> dict[str, Any]:
    """:func:`sample_policy` then :func:`score_replies`: ``{"post_id", "responses", "self_logprob",
    ["logprob_shift"], "scores": {kind: [per-prompt mean F1]}}``."""
    res = sample_policy(model_path, prompts, **sampling)
    return {"post_id": list(post_ids), **res, "scores": score_replies(res["responses"], post_ids, references, encoder)}
