"""Requests that share their messages go as one chat completion with ``n`` choices.

A post's samples in one style differ only in ``sample_index`` and seed (``seed + i``), so the server
reads the prompt once and an API bills it once. Choice ``j`` of a request seeded ``s`` is seeded
``s + j`` by both local servers, so a group is a run of samples whose seeds follow each other: its
first sample's request seeds the rest. Each choice is stored under its own sample's key, exactly the
record a single request would have left, so stores written one request per sample stay valid and a
resumed run asks only for the samples still missing (:func:`group_requests` splits them into runs).

Styles whose prompt differs per sample (``persona``, ``seeded``: :data:`PER_SAMPLE_STYLES`) never
share messages, so they stay one request per sample.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from simlib.generate.requests import GenRequest, MalformedResponse, completion_fields

__all__ = ["PER_SAMPLE_STYLES", "group_requests", "group_body", "split_usage", "first_choice_usage", "choice_fields",
           "requests_per_post"]

# Styles whose messages differ between the samples of a post (one persona, or one draw of examples, each).
PER_SAMPLE_STYLES = frozenset({"persona", "seeded"})


def _same_prompt(r: GenRequest) -> tuple:
    return (r.model, str(r.post_id), r.style, r.messages_hash, r.temperature, r.top_p, r.max_tokens, r.seed is None)


def _follows(prev: GenRequest, r: GenRequest) -> bool:
    """``r`` is the next choice after ``prev``: next sample, next seed (or no seeds at all)."""
    return r.sample_index == prev.sample_index + 1 and (r.seed is None or r.seed == prev.seed + 1)


def group_requests(requests: Sequence[GenRequest], max_n: int | None = None) -> list[list[GenRequest]]:
    """Runs of requests that one call with ``n = len(run)`` answers, in the order their first member came.

    Same messages, model and sampling settings, consecutive sample indices and seeds; at most
    ``max_n`` a run (``None``: no cap). Missing samples split a run (their seeds would shift).
    """
    if max_n is not None and max_n < 1:
        raise ValueError(f"max_n must be at least 1, got {max_n!r}")
    by_prompt: dict[tuple, list[GenRequest]] = {}
    for r in requests:
        by_prompt.setdefault(_same_prompt(r), []).append(r)
    runs: list[list[GenRequest]] = []
    for members in by_prompt.values():
        members = sorted(members, key=lambda r: r.sample_index)
        run = [members[0]]
        for r in members[1:]:
            if _follows(run[-1], r) and (max_n is None or len(run) < max_n):
                run.append(r)
            else:
                runs.append(run)
                run = [r]
        runs.append(run)
    first = {id(r): i for i, r in enumerate(requests)}
    return sorted(runs, key=lambda g: min(first[id(r)] for r in g))


def group_body(group: Sequence[GenRequest], **body_kw: Any) -> dict[str, Any]:
    """The request body of a group: its first sample's, with ``n`` when it has more than one."""
    body = group[0].body(**body_kw)
    if len(group) > 1:
        body["n"] = len(group)
    return body


def _shares(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split in proportion to ``weights`` into integers that add up to it (largest remainder)."""
    if not weights:
        return []
    s = float(sum(weights))
    exact = [total * w / s for w in weights] if s > 0 else [total / len(weights)] * len(weights)
    out = [math.floor(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: out[i] - exact[i])[: total - sum(out)]:
        out[i] += 1
    return out


def split_usage(usage: Mapping[str, int], texts: Sequence[str]) -> list[dict[str, int]]:
    """Each choice's share of a response's ``usage``: the prompt (read and billed once) evenly, the
    completion tokens by the length of each choice's text; the shares add up to the response's."""
    n = len(texts)
    prompt = _shares(int(usage.get("prompt_tokens") or 0), [1.0] * n)
    completion = _shares(int(usage.get("completion_tokens") or 0), [len(t) + 1 for t in texts])
    return [{"prompt_tokens": p, "completion_tokens": c} for p, c in zip(prompt, completion)]


def first_choice_usage(usage: Mapping[str, int], texts: Sequence[str], finishes: Sequence[str | None],
                       max_tokens: int) -> list[dict[str, int]]:
    """Per-choice usage where the response counts its first choice only (llama-server with ``n``): the
    prompt evenly, the first choice's own count, ``max_tokens`` for a choice cut at the limit, and for the
    others their length at the first choice's tokens per character (estimates, marked in the record)."""
    prompt = _shares(int(usage.get("prompt_tokens") or 0), [1.0] * len(texts))
    first = int(usage.get("completion_tokens") or 0)
    rate = first / len(texts[0]) if texts[0] else 0.25  # no text to go by: about four characters a token
    completion = [first] + [max_tokens if f == "length" else min(max_tokens, max(1, round(len(t) * rate)))
                            for t, f in zip(texts[1:], finishes[1:])]
    return [{"prompt_tokens": p, "completion_tokens": c} for p, c in zip(prompt, completion)]


def choice_fields(completion: Any, n: int, max_tokens: int | None = None) -> tuple[list[dict[str, Any] | None], bool]:
    """(fields of choice ``j`` for ``j < n``, or None where it is missing or unusable, each with its share
    of the response's ``usage``; whether those shares of the completion tokens are estimates).

    Raises :class:`MalformedResponse` when the body has no usable choice at all (then the whole
    request is retried); one bad choice only marks that choice for a retry. llama-server (recognised by
    its ``timings``) counts the first choice only in ``usage``: :func:`first_choice_usage`.
    """
    if hasattr(completion, "model_dump"):
        completion = completion.model_dump()
    if not isinstance(completion, Mapping):
        raise MalformedResponse(f"expected a JSON object, got {type(completion).__name__}")
    choices = completion.get("choices")
    if not choices or not isinstance(choices, list):
        raise MalformedResponse("response has no choices")
    out: list[dict[str, Any] | None] = [None] * n
    for pos, ch in enumerate(choices):
        idx = ch.get("index", pos) if isinstance(ch, Mapping) else pos
        if not isinstance(idx, int) or not 0 <= idx < n or out[idx] is not None:
            continue
        try:
            out[idx] = completion_fields({**completion, "choices": [ch]})
        except MalformedResponse:
            continue
    if all(f is None for f in out):
        raise MalformedResponse(f"none of the {len(choices)} choices is usable")
    usage = next(f for f in out if f is not None)["usage"]
    texts = [f["text"] if f else "" for f in out]
    estimated = n > 1 and completion.get("timings") is not None and max_tokens is not None
    shares = (first_choice_usage(usage, texts, [f["finish_reason"] if f else None for f in out], max_tokens)
              if estimated else split_usage(usage, texts))
    return [None if f is None else {**f, "usage": u} for f, u in zip(out, shares)], estimated


def requests_per_post(style: str, n_samples: int, max_n: int | None) -> int:
    """Chat requests one post costs in ``style``: one per sample where the prompt differs per sample
    or grouping is off (``max_n`` 1), else one per ``max_n`` samples."""
    if style in PER_SAMPLE_STYLES or max_n == 1:
        return n_samples
    return math.ceil(n_samples / max_n) if max_n else 1
