"""A judge that always answers: labels chosen by log-prob over a fixed label set, and validated.

A generative judge can answer anything ("I cannot decide", a paraphrase, a refusal); a small one
mostly does, and its unparsed answers leave nothing to count. Here the judge never writes: a
local causal LM (``Config.judge``, a model that wrote none of the replies it labels) reads the
post title and the reply, and each candidate label is scored as the continuation of a fixed cue
(``"\\nVerdict on the poster:" + " NTA"``, ...). The label with the highest calibrated
log-probability wins, so every reply gets exactly one label of the set. The judge reads each
reply once per question, and only the label words are scored.

Calibration (Zhao et al. 2021, "Calibrate before use"): a model prefers some label words whatever
the input. Each label's log-prob is taken relative to its log-prob after a content-free reply
(``"N/A"``) to the same post, so the choice reflects what the reply adds.

Questions
---------
``stance``    the AITA verdict the reply gives: NTA, YTA, ESH, NAH, INFO. Validated: real replies
              that state a verdict (:func:`simlib.measures.aita.parse_verdict`) are ground truth, and
              the judge reads them with every verdict expression masked
              (:func:`simlib.measures.aita.mask_verdicts`), so it must infer the stance from the rest.
``register``  how the reply engages: mock, vent, analysis, advice, support. No ground truth
              exists in the data, so these labels are *not validated*; a chapter that shows them
              must say so.

The judge always reads masked text, on every source, so that its stance labels mean the same
thing on the replies it was validated on and on those it labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from simlib.measures.aita import VERDICTS, mask_verdicts
from simlib.text import truncate_post

__all__ = ["Question", "QUESTIONS", "STANCES", "REGISTERS", "CONTENT_FREE", "judge_prompt",
           "judge_requests", "choose", "cohen_kappa", "validate_stance"]


@dataclass(frozen=True)
class Question:
    """One question: the cue after the reply, and the words that name each label after it."""

    name: str
    cue: str
    verbalisers: Mapping[str, str]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.verbalisers)


STANCES: tuple[str, ...] = VERDICTS
REGISTERS: tuple[str, ...] = ("mock", "vent", "analysis", "advice", "support")
QUESTIONS: tuple[Question, ...] = (
    Question("stance", "\nVerdict on the poster:", {v: f" {v}" for v in STANCES}),
    Question("register", "\nTone of the comment:", {"mock": " mocking", "vent": " venting",
                                                    "analysis": " analytical", "advice": " advice",
                                                    "support": " supportive"}),
)
CONTENT_FREE = "N/A"  # the reply whose label log-probs are each label's prior


def judge_prompt(title: str, comment: str, subreddit: str = "aitah", max_chars: int = 600) -> str:
    """What the judge reads: subreddit, post title and the reply with its verdicts masked, cut
    to ``max_chars`` characters on a word boundary.

    >>> print(judge_prompt("AITA for leaving?", "NTA, you did right."))
    A comment on r/aitah.
    Post title: AITA for leaving?
    Comment: …, you did right.
    """
    sub = str(subreddit or "").removeprefix("/").removeprefix("r/")
    text = truncate_post(mask_verdicts(str(comment)).strip(), max_chars)
    return f"A comment on r/{sub}.\nPost title: {str(title).strip()}\nComment: {text}"


def judge_requests(items: Iterable[Mapping], max_chars: int = 600,
                   questions: Iterable[str] | None = None):
    """Score requests for ``items`` (``item_id``, ``title``, ``text``, optional ``subreddit``):
    every label of every question (all of :data:`QUESTIONS`, or those named) for each item, and
    the same for one content-free reply per distinct title (item ids ``"content-free:<title>"``).

    The cue ends the prompt and the label words are the scored continuation, so the requests of
    one item and question share a prompt that the scorer reads once, and a label's first token
    comes from that prompt's last position.
    """
    from simlib.lm.logprob import ScoreRequest

    qs = [q for q in QUESTIONS if questions is None or q.name in set(questions)]
    reqs, titles = [], {}
    for it in items:
        sub = it.get("subreddit", "aitah")
        titles.setdefault(str(it["title"]), sub)
        prompt = judge_prompt(it["title"], it["text"], sub, max_chars)
        reqs += [ScoreRequest(str(it["item_id"]), f"{q.name}:{lab}", prompt + q.cue, word)
                 for q in qs for lab, word in q.verbalisers.items()]
    for title, sub in titles.items():
        prompt = judge_prompt(title, CONTENT_FREE, sub, max_chars)
        reqs += [ScoreRequest(f"content-free:{title}", f"{q.name}:{lab}", prompt + q.cue, word)
                 for q in qs for lab, word in q.verbalisers.items()]
    return reqs


def choose(scores: pd.DataFrame, titles: Mapping[str, str]) -> pd.DataFrame:
    """Labels from scored requests: ``scores`` has ``post_id`` (the item id), ``response_id``
    (``question:label``) and ``sum_logprob``; ``titles`` maps each item id to its post title.

    Returns one row per item: ``item_id``, then per question its label and ``<question>_margin``
    (calibrated log-prob of the winner minus the runner-up; small = a near tie). An item not
    asked a question has NaN there. No scores (no items) give no rows, with those columns.
    """
    if scores.empty:
        return pd.DataFrame(columns=["item_id", *(c for q in QUESTIONS for c in (q.name, f"{q.name}_margin"))])
    s = scores.assign(question=scores["response_id"].str.split(":").str[0],
                      label=scores["response_id"].str.split(":", n=1).str[1])
    prior = s[s["post_id"].str.startswith("content-free:")]
    prior = prior.assign(title=prior["post_id"].str.removeprefix("content-free:"))
    prior = prior.set_index(["title", "question", "label"])["sum_logprob"]
    s = s[~s["post_id"].str.startswith("content-free:")]
    key = pd.MultiIndex.from_arrays([s["post_id"].map(titles), s["question"], s["label"]])
    s = s.assign(calibrated=s["sum_logprob"].to_numpy() - prior.reindex(key).to_numpy())
    rows = []
    for item, g in s.groupby("post_id", sort=False):
        row = {"item_id": item}
        for q, gq in g.groupby("question", sort=False):
            order = gq.sort_values("calibrated", ascending=False, kind="stable")
            row[q] = order["label"].iloc[0]
            c = order["calibrated"].to_numpy()
            row[f"{q}_margin"] = float(c[0] - c[1]) if len(c) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def cohen_kappa(a: Iterable, b: Iterable) -> float:
    """Cohen's kappa between two label sequences: agreement beyond what their marginals give by
    chance (1 = perfect, 0 = chance). NaN when chance agreement is already 1.

    >>> cohen_kappa(["x", "y", "x", "y"], ["x", "y", "x", "y"])
    1.0
    >>> cohen_kappa(["x", "x", "y", "y"], ["x", "y", "x", "y"])
    0.0
    """
    a, b = np.asarray(list(a), dtype=object), np.asarray(list(b), dtype=object)
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"need two label sequences of one non-zero length, got {len(a)} and {len(b)}")
    po = float(np.mean(a == b))
    cats = set(a) | set(b)
    pe = float(sum(np.mean(a == c) * np.mean(b == c) for c in cats))
    return float("nan") if pe >= 1 else round((po - pe) / (1 - pe), 12)


def validate_stance(pred: pd.Series, truth: pd.Series, groups: pd.Series, n_boot: int = 2000,
                    seed: int = 0) -> dict:
    """Accuracy and Cohen's kappa of the judge's stance against verdicts stated in the text, with
    95% intervals from a bootstrap over ``groups`` (posts: replies to one post are not
    independent). Rows with no truth are left out. Also the accuracy of always answering the
    most common true verdict, the bar accuracy alone has to clear."""
    keep = truth.notna()
    p, t, g = pred[keep].to_numpy(dtype=object), truth[keep].to_numpy(dtype=object), groups[keep].to_numpy()
    out = {"n": int(len(t)), "n_posts": int(len(set(g)))}
    if not len(t):
        return {**out, **{k: float("nan") for k in ("accuracy", "acc_lo", "acc_hi", "kappa", "kappa_lo",
                                                      "kappa_hi", "majority")}}
    uniq = np.unique(g)
    idx = [np.flatnonzero(g == u) for u in uniq]
    rng = np.random.default_rng(seed)
    accs, kappas = [], []
    for _ in range(n_boot):
        rows = np.concatenate([idx[i] for i in rng.integers(0, len(uniq), len(uniq))])
        accs.append(np.mean(p[rows] == t[rows]))
        kappas.append(cohen_kappa(p[rows], t[rows]))
    top = pd.Series(t).value_counts()
    return {**out, "accuracy": float(np.mean(p == t)),
            "acc_lo": float(np.nanquantile(accs, 0.025)), "acc_hi": float(np.nanquantile(accs, 0.975)),
            "kappa": cohen_kappa(p, t), "kappa_lo": float(np.nanquantile(kappas, 0.025)),
            "kappa_hi": float(np.nanquantile(kappas, 0.975)),
            "majority": float(top.iloc[0] / len(t)), "majority_label": str(top.index[0])}
