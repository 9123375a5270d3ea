"""AITA verdicts stated in a reply (NTA, YTA, ESH, NAH, INFO): found by pattern, or masked.

Real replies that state a verdict are the judge's free ground truth (:mod:`simlib.measures.judge`),
and the spread of verdicts over a post's replies is one of the diversity measures
(:mod:`simlib.measures.diversity`). Only posts that ask readers to judge the poster have
verdicts (:func:`verdict_posts`); elsewhere a pattern match ("you're an asshole" on r/AskReddit)
is a coincidence, not a verdict, so every verdict measure reads only those posts' replies.
"""
from __future__ import annotations

import re

import pandas as pd

__all__ = ["VERDICTS", "parse_verdict", "mask_verdicts", "verdict_posts", "verdict_rows"]

VERDICTS: tuple[str, ...] = ("NTA", "YTA", "ESH", "NAH", "INFO")

# Spelled-out forms of "asshole" that Reddit uses (the "AH" abbreviation included).
_AH_CORE = r"(?:asshole|ass-hole|ass\s+hole|a-?hole|a\*+hole|arsehole|ah|a\*+)"
_AH = _AH_CORE + r"(?![a-z0-9])"
_AHS = _AH_CORE + r"s?(?![a-z0-9])"  # plural allowed
_NOT_W = r"(?<![a-z0-9])"  # no letter/digit right before
_NOT_A = r"(?![a-z0-9])"  # no letter/digit right after

# (verdict, pattern, flags). Patterns are matched against the text with curly quotes
# straightened; the earliest match in the text wins (Reddit puts the verdict first).
_VERDICT_PATTERNS: list[tuple[str, str, int]] = [
    # Acronyms, as whole tokens (letters/digits may not touch them; *, _, ., ! may).
    ("NTA", _NOT_W + r"(?:nta|ntah|ywnbta)" + _NOT_A, re.I),
    ("YTA", _NOT_W + r"(?:yta|ytah|ywbta)" + _NOT_A, re.I),
    ("ESH", _NOT_W + r"esh" + _NOT_A, re.I),
    # "nah" and "info" are ordinary English words ("Nah, NTA", "for your info"), so the
    # acronym counts only in capitals.
    ("NAH", r"(?<![A-Za-z0-9])NAH(?![A-Za-z0-9])", 0),
    ("INFO", r"(?<![A-Za-z0-9])INFO(?![A-Za-z0-9])", 0),
    # Spelled forms.
    # "I don't think you're the asshole" is a NTA verdict that contains a YTA phrase; this
    # pattern starts earlier, so the earliest-match rule picks NTA.
    (
        "NTA",
        _NOT_W + r"(?:don't|do\s+not|dont|wouldn't|would\s+not|wouldnt|can't|cannot)\s+"
        r"(?:think|say|call|see\s+how|believe)\s+(?:that\s+)?(?:you're|you\s+are|youre|ur|u\s+r)\s+"
        r"(?:being\s+)?(?:the|an?)\s+" + _AH,
        re.I,
    ),
    (
        "NTA",
        r"(?:" + _NOT_W + r"not|n't|" + _NOT_W + r"never|" + _NOT_W + r"aint)\s+"
        r"(?:be\s+|being\s+)?(?:the|an?)\s+" + _AH,
        re.I,
    ),
    (
        "YTA",
        _NOT_W + r"(?:you're|youre|you\s+are|you\s+were|ur|u\s+r|u\s+are|you'd\s+be|"
        r"you\s+would\s+be|you\s+will\s+be|you'll\s+be)\s+"
        r"(?:(?:definitely|totally|absolutely|clearly|really|kind\s+of|kinda|a\s+bit|"
        r"being|so|100%)\s+)*(?:the|an?)\s+" + _AH,
        re.I,
    ),
    ("ESH", _NOT_W + r"(?:everyone|everybody|every\s+one|all\s+of\s+you)\s+sucks?\s+here" + _NOT_A, re.I),
    (
        "NAH",
        _NOT_W + r"(?:no\s+" + _AHS + r"\s+here|no\s+one(?:'s|\s+is|\s+here\s+is)\s+(?:the|an?)\s+"
        + _AH + r"|nobody(?:'s|\s+is|\s+here\s+is)\s+(?:the|an?)\s+" + _AH + r")",
        re.I,
    ),
    ("INFO", _NOT_W + r"not\s+enough\s+info(?:rmation)?" + _NOT_A, re.I),
]
_COMPILED = [(v, re.compile(p, f)) for v, p, f in _VERDICT_PATTERNS]


def parse_verdict(text: str | None) -> str | None:
    """The AITA verdict (``NTA``, ``YTA``, ``ESH``, ``NAH`` or ``INFO``) a response gives.

    Rules:

    - Acronyms are whole tokens in any case: ``nta``, ``NTA.``, ``**YTA**``, ``Soft YTA``.
      A letter or digit may not touch them, so "mental" or "Santa" are not NTA.
    - ``YWBTA`` ("you would be ...") -> YTA, ``YWNBTA`` -> NTA. ``YTAH``/``NTAH`` (a
      common spelling that spells out the "h") count as YTA/NTA. ``WIBTA``/``AITA`` are
      the poster's question, not a verdict, and are ignored.
    - ``NAH`` and ``INFO`` count only in capitals, because "nah" and "info" are ordinary
      words ("Nah, NTA" is NTA).
    - Spelled forms: "not the asshole" / "you're not the a-hole" / "wouldn't be the AH"
      -> NTA, "you're the asshole" / "you are the a-hole" -> YTA, "everyone sucks here"
      -> ESH, "no assholes here" / "no one is the asshole" -> NAH, "not enough info" ->
      INFO. "I don't think you're the asshole" -> NTA.
    - When several appear, the first occurrence in the text wins (verdict-first
      convention): "NTA, but ESH if ..." -> NTA.
    - ``None`` if no verdict is found (or the text is None/empty).

    >>> parse_verdict("**NTA**. Your sister is out of line.")
    'NTA'
    >>> parse_verdict("Honestly you're the asshole here.")
    'YTA'
    >>> parse_verdict("That is mental.") is None
    True
    """
    if not text:
        return None
    s = str(text).replace("\u2019", "'").replace("\u2018", "'")
    best: tuple[int, int, str] | None = None  # (start, -length, verdict)
    for verdict, rx in _COMPILED:
        m = rx.search(s)
        if m is not None:
            key = (m.start(), -(m.end() - m.start()), verdict)
            if best is None or key < best:
                best = key
    return None if best is None else best[2]


def mask_verdicts(text: str | None, mark: str = "…") -> str:
    """``text`` with every verdict expression :func:`parse_verdict` would find replaced by
    ``mark``, so that a reader (the judge) must infer the stance from the rest of the reply.

    >>> mask_verdicts("NTA. You're not the asshole, but ESH a bit.")
    "…. You're …, but … a bit."
    >>> parse_verdict(mask_verdicts("**YTA** honestly")) is None
    True
    """
    if not text:
        return ""
    s = str(text).replace("\u2019", "'").replace("\u2018", "'")
    for _ in range(3):  # a mask can join text into a new match ("not the … asshole"): repeat
        before = s
        for _, rx in _COMPILED:
            s = rx.sub(mark, s)
        if s == before:
            break
    return s


def verdict_posts(posts: pd.DataFrame) -> pd.Index:
    """Ids of the ``posts`` (post_id, title, subreddit) that ask for an AITA verdict: those of
    r/AITAH or r/AmItheAsshole, or titled AITA/WIBTA (:func:`simlib.generate.prompts.is_aita`, the
    rule that also adds the verdict instruction to the ``humanlike`` prompt).

    >>> verdict_posts(pd.DataFrame({"post_id": ["a", "b", "c"], "title": ["AITA for X?", "Why?", "Hm"],
    ...                             "subreddit": ["AskReddit", "AskReddit", "AITAH"]})).tolist()
    ['a', 'c']
    """
    from simlib.generate.prompts import is_aita

    if posts.empty:
        return pd.Index([], dtype=object, name="post_id")
    asks = [is_aita(str(t or ""), str(s or "")) for t, s in zip(posts["title"], posts["subreddit"])]
    return pd.Index(posts.loc[asks, "post_id"].astype(str).tolist(), dtype=object, name="post_id")


def verdict_rows(table: pd.DataFrame, posts: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``table`` (any frame with ``post_id``) whose post asks for a verdict."""
    return table[table["post_id"].astype(str).isin(verdict_posts(posts))]
