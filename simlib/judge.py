"""Register taxonomy: an LLM judge labels how a response engages with its post.

The judge goes through the same OpenAI-compatible client as synthetic generation
(:func:`simlib.generate.client.generate`), so its calls are cached, retried and counted the same
way. The rubric below is the whole instruction the judge sees; editing it changes every cache key.

Rubric (one label per response):

``agree``      sides with the poster or supports their view (AITA: NTA).
``disagree``   sides against the poster or contradicts their view (AITA: YTA).
``mock``       ridicules, teases or is sarcastic toward the poster or the situation.
``emotional``  mainly expresses a feeling (anger, sympathy, disgust, amusement) or vents.
``analysis``   explains causes, structure or context: why this happens, how it works.
``other``      anything else: jokes about something else, questions, off-topic remarks.

A judge answer is mapped to the first label word it contains; an answer with none becomes
``unparsed`` and is reported, never guessed.
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping

import pandas as pd

from .cache import content_hash

LABELS = ("agree", "disagree", "mock", "emotional", "analysis", "other")

RUBRIC = """You label Reddit comments. Read the post and one comment, then answer with exactly one word:
agree - the comment sides with the poster or supports their view (in AITA threads: NTA)
disagree - the comment sides against the poster or contradicts them (in AITA threads: YTA)
mock - the comment ridicules, teases or is sarcastic toward the poster
emotional - the comment mainly expresses a feeling (anger, sympathy, disgust, amusement) or vents
analysis - the comment explains causes, structure or context
other - anything else
Answer with one word from: agree, disagree, mock, emotional, analysis, other."""

USER = "Post title: {title}\n\nComment: {comment}\n\nLabel:"

_LABEL_RE = re.compile(r"\b(" + "|".join(LABELS) + r")\b", re.IGNORECASE)


def parse_label(answer: str | None) -> str:
    """First rubric label in the judge's answer, else ``unparsed``.

    >>> parse_label("Label: Mock. The comment is sarcastic")
    'mock'
    >>> parse_label("I cannot decide")
    'unparsed'
    """
    m = _LABEL_RE.search(answer or "")
    return m.group(1).lower() if m else "unparsed"


def rubric_hash() -> str:
    return content_hash({"rubric": RUBRIC, "user": USER})


def judge_requests(items: Iterable[Mapping], model: str, max_comment_chars: int = 600):
    """One deterministic (temperature 0) request per item with ``item_id``, ``title``, ``text``."""
    from .generate.client import GenRequest

    reqs = []
    for it in items:
        comment = str(it["text"])[:max_comment_chars]
        messages = ({"role": "system", "content": RUBRIC},
                    {"role": "user", "content": USER.format(title=it["title"], comment=comment)})
        reqs.append(GenRequest(post_id=str(it["item_id"]), style=f"judge-{rubric_hash()}", sample_index=0,
                               messages=messages, model=model, temperature=0.0, top_p=1.0, max_tokens=6,
                               seed=0))
    return reqs


def label_table(store: pd.DataFrame) -> pd.DataFrame:
    """Judge store records → ``item_id, answer, label``."""
    if store.empty:
        return pd.DataFrame(columns=["item_id", "answer", "label"])
    out = store[["post_id", "text"]].rename(columns={"post_id": "item_id", "text": "answer"})
    out["label"] = out["answer"].map(parse_label)
    return out.reset_index(drop=True)


def verdict_agreement(labels: pd.Series, verdicts: pd.Series) -> dict:
    """How often the judge's agree/disagree matches the parsed AITA verdict (NTA→agree, YTA→disagree).

    Only responses with an NTA or YTA verdict count; returns the rate and the count it rests on.
    """
    expected = verdicts.map({"NTA": "agree", "YTA": "disagree"})
    mask = expected.notna()
    n = int(mask.sum())
    rate = float((labels[mask] == expected[mask]).mean()) if n else float("nan")
    return {"n": n, "agreement": rate}
