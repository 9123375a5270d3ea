"""Training and evaluation examples of the reward experiment (finding 2), as the study builds them.

The study trains on examples that each pair one post with **one** ground-truth reply, and scores a
completion against that reply alone. Two runs of a seed (synthetic and real targets) must differ only
in those replies, so this module builds both from the same posts, in the same order, under the same
example ids, and with the same length cap:

* :func:`cap_tokens` cuts a target to the completion budget (the policy's tokens) on a word boundary,
  so a completion can in principle match all of it whatever the target's kind;
* :func:`draw` takes ``k`` targets per post by a seeded random draw (a post's real replies arrive in
  Reddit's ranking; taking the first ones would select the most upvoted);
* :func:`paired` keeps the posts that have ``k`` targets of every kind and returns one prompt per
  example plus, per kind, ``{example_id: [target]}``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

SEP = "#"  # example id = f"{post_id}#{i}"


def cap_tokens(text: str, tokenizer: Any, max_tokens: int) -> str:
    """``text`` cut to at most ``max_tokens`` of ``tokenizer``'s tokens, ending on a whole word.

    Text within the budget is returned stripped; a cut drops the last, possibly partial, word
    (unless the budget holds a single word, which is then kept cut).

    >>> class Chars:  # one token per character
    ...     def __call__(self, t, add_special_tokens=False): return {"input_ids": list(t)}
    ...     def decode(self, ids): return "".join(ids)
    >>> cap_tokens("one two three", Chars(), 9)
    'one two'
    >>> cap_tokens("short", Chars(), 9)
    'short'
    """
    text = (text or "").strip()
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if len(ids) <= max_tokens:
        return text
    cut = tokenizer.decode(ids[:max_tokens])
    head, sep, _ = cut.rstrip().rpartition(" ")
    # The next token may continue the last word: keep only words the budget holds whole.
    return (head if sep and head.strip() else cut).strip()


def _rng(seed: int, key: str) -> np.random.Generator:
    # A stream per (seed, post): a post's draw does not depend on which other posts are present.
    return np.random.default_rng(int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:15], 16))


def draw(texts: Mapping[str, Sequence[str]], k: int, seed: int) -> dict[str, list[str]]:
    """Up to ``k`` non-empty texts per post, drawn at random without replacement (seeded per post).

    >>> len(draw({"p": ["a", "b", "c"]}, 2, 0)["p"]), draw({"p": ["a", ""]}, 5, 0)
    (2, {'p': ['a']})
    """
    out = {}
    for pid, ts in texts.items():
        pool = [t for t in ts if isinstance(t, str) and t.strip()]
        idx = _rng(seed, str(pid)).permutation(len(pool))[:k]
        out[str(pid)] = [pool[i] for i in sorted(idx)]
    return out


def by_post(df: pd.DataFrame, text_col: str) -> dict[str, list[str]]:
    """``{post_id: [texts]}`` of a long table, in its row order."""
    return {str(pid): g[text_col].fillna("").astype(str).tolist() for pid, g in df.groupby("post_id", sort=False)}


def paired(prompts: pd.DataFrame, targets: Mapping[str, Mapping[str, Sequence[str]]],
           k: int) -> tuple[pd.DataFrame, dict[str, dict[str, list[str]]]]:
    """Examples for every kind of target: the posts of ``prompts`` (in their order) that have at least
    ``k`` targets of every kind in ``targets``, each repeated ``k`` times.

    Returns ``records`` (columns ``post_id`` = example id, ``source_post`` and ``prompt``, ``k`` rows per
    kept post, post by post) and ``{kind: {example_id: [one target]}}``. The ``post_id`` column holds the
    example id because the trainer and the reward key references by that column.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    keep = [pid for pid in prompts["post_id"].astype(str)
            if all(len(t.get(pid, ())) >= k for t in targets.values())]
    if not keep:
        raise ValueError(f"no post has {k} targets of every kind ({sorted(targets)})")
    by_id = prompts.assign(post_id=prompts["post_id"].astype(str)).set_index("post_id")
    rows = [{"post_id": f"{pid}{SEP}{i}", "source_post": pid, "prompt": by_id.loc[pid, "prompt"]}
            for pid in keep for i in range(k)]
    refs = {kind: {f"{pid}{SEP}{i}": [t[pid][i]] for pid in keep for i in range(k)} for kind, t in targets.items()}
    return pd.DataFrame(rows), refs


def source_post(example_id: str) -> str:
    """The post of an example id (``"abc#2"`` → ``"abc"``)."""
    return str(example_id).rsplit(SEP, 1)[0]


def first(texts: Mapping[str, Sequence[str]], k: int) -> dict[str, list[str]]:
    """The first ``k`` non-empty texts per post (for targets that are already random samples)."""
    return {str(p): [t for t in ts if isinstance(t, str) and t.strip()][:k] for p, ts in texts.items()}


@dataclass
class Design:
    """Everything the reward experiment trains and evaluates on, for every kind of target.

    ``train``/``train_refs``: the training examples (:func:`paired`). ``probe``: prompts of a fixed set
    of training posts, each with the targets of all its training examples (``probe_refs``), on which
    every policy's reward is measured with fixed sampling seeds. ``test``: held-out posts, each with
    up to ``r`` references per kind (``test_refs``), for transfer. Kinds in ``eval_only`` are
    references for evaluation, never training targets.
    """

    train: pd.DataFrame
    train_refs: dict[str, dict[str, list[str]]]
    probe: pd.DataFrame
    probe_refs: dict[str, dict[str, list[str]]]
    test: pd.DataFrame
    test_refs: dict[str, dict[str, list[str]]]
    kinds: tuple[str, ...]
    eval_only: tuple[str, ...] = ()

    @property
    def n_examples(self) -> int:
        return len(self.train)


def design(train_prompts: pd.DataFrame, test_prompts: pd.DataFrame, targets: Mapping[str, Mapping[str, Sequence[str]]],
           k: int, r: int, probe_posts: int = 0, eval_only: Sequence[str] = ()) -> Design:
    """The :class:`Design` of ``targets`` (``{kind: {post_id: [capped texts]}}``): ``k`` examples per
    training post, ``probe_posts`` probe posts (0 = every training post kept), ``r`` references per
    test post (test posts lacking a reference of some kind are dropped)."""
    trained = {kd: t for kd, t in targets.items() if kd not in eval_only}
    train, train_refs = paired(train_prompts, trained, k)
    kept = list(dict.fromkeys(train["source_post"]))
    kept = kept[:probe_posts] if probe_posts else kept
    probe = train_prompts.assign(post_id=train_prompts["post_id"].astype(str)).set_index("post_id").loc[kept].reset_index()
    # a probe post is scored against every training target of its post: their mean F1 is the post's
    # expected training reward, with less noise than one target's (the paired gain is unchanged)
    probe_refs = {kd: {p: [train_refs[kd][f"{p}{SEP}{i}"][0] for i in range(k)] for p in kept} for kd in trained}
    tp = test_prompts.assign(post_id=test_prompts["post_id"].astype(str))
    tp = tp[[all(targets[kd].get(p) for kd in targets) for p in tp["post_id"]]].reset_index(drop=True)
    test_refs = {kd: {p: list(targets[kd][p][:r]) for p in tp["post_id"]} for kd in targets}
    return Design(train, train_refs, probe, probe_refs, tp, test_refs, tuple(targets), tuple(eval_only))
