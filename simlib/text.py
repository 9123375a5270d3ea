"""The long-post policy, shared by every prompt builder (generation, scoring, data).

A post body longer than ``max_chars`` keeps its beginning (a Reddit post sets up its situation
first), is cut at the last whitespace before the limit so that no word is split (a hard cut when
that whitespace would throw away more than half of the allowed text, e.g. one giant URL), loses
trailing whitespace, and ends in the marker ``" […]"``. The marker counts towards the limit: the
result is never longer than ``max_chars``. Text within the limit is returned unchanged.
"""
from __future__ import annotations

TRUNCATION_MARKER = " […]"


def truncate_post(text: str | None, max_chars: int | None, marker: str = TRUNCATION_MARKER) -> str:
    """Apply the long-post policy (module docstring); ``max_chars=None`` disables it.

    >>> truncate_post("one two three four", 13)
    'one two […]'
    >>> truncate_post("short", 100)
    'short'
    """
    text = text or ""
    if max_chars is None or len(text) <= max_chars:
        return text
    room = max_chars - len(marker)
    if room <= 0:
        raise ValueError(f"max_chars={max_chars} leaves no room for text before the marker {marker!r}")
    cut = text[: room + 1]  # one extra char: a space right after the limit is a clean boundary
    ws = max(cut.rfind(c) for c in (" ", "\n", "\t", "\r"))
    head = cut[:ws] if ws >= room // 2 else text[:room]
    return head.rstrip() + marker
