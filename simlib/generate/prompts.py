"""Prompt styles: named builders from a Reddit post to chat messages.

A *style* turns a post (title, body, subreddit) into a list of OpenAI-style chat messages
(``[{"role": ..., "content": ...}, ...]``). Two styles exist now:

``plain``
    The naive prompt of the study: "here is a Reddit post, write a comment". No system
    message, no guidance on tone or length.
``humanlike``
    Engineered instructions that ask the model to answer the way a real Reddit user would:
    decisive, casual, takes a side, no hedging, no assistant tone, short. On AITA-style posts
    (r/AmItheAsshole, r/AITAH, or a title starting with AITA/AITAH/WIBTA/WIBTAH) the reply must
    open with a verdict: NTA, YTA, ESH, NAH or INFO.

Later styles (``persona``, ``seeded``) plug in with :func:`register_style`; a builder may take
extra keyword arguments (``persona=...``, ``examples=...``) that :func:`build_messages`
passes through.

Truncation policy (:func:`truncate_post`): only the post *body* is truncated, never the
title or the subreddit. A body longer than ``max_post_chars`` characters is cut at the last
whitespace at or before the limit (a hard cut when that whitespace would throw away more than
half of the allowed text, e.g. one giant URL), trailing whitespace is stripped and the marker
``" […]"`` is appended. The marker counts towards the limit: the returned body is never longer
than ``max_post_chars``. Bodies within the limit are returned unchanged.

:func:`prompt_hash` is a content hash of a style's template text (plus the truncation
marker), so editing a prompt changes the hash and therefore every cache key built from it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from simlib.cache import content_hash
from simlib.text import TRUNCATION_MARKER, truncate_post

__all__ = [
    "DEFAULT_MAX_POST_CHARS",
    "TRUNCATION_MARKER",
    "AITA_VERDICTS",
    "PromptStyle",
    "STYLES",
    "get_style",
    "register_style",
    "build_messages",
    "prompt_hash",
    "messages_hash",
    "post_fields",
    "is_aita",
]

DEFAULT_MAX_POST_CHARS = 3000
AITA_VERDICTS = ("NTA", "YTA", "ESH", "NAH", "INFO")
AITA_SUBREDDITS = frozenset({"amitheasshole", "aitah"})
_AITA_TITLE = re.compile(r"^\s*(AITA|AITAH|WIBTA|WIBTAH)\b", re.IGNORECASE)

Messages = list[dict[str, str]]


# --------------------------------------------------------------------------- helpers


def post_fields(post: Any) -> tuple[str, str, str]:
    """(title, body, subreddit) from a mapping or an object with those attributes.

    ``selftext``/``text`` are accepted for the body; a leading ``r/`` is stripped from the
    subreddit.
    """

    def get(*names: str) -> str:
        for n in names:
            if isinstance(post, Mapping):
                v = post.get(n)
            else:
                v = getattr(post, n, None)
            if v is not None and not (isinstance(v, float) and v != v):  # skip NaN from pandas
                return str(v)
        return ""

    title = get("title").strip()
    body = get("body", "selftext", "text").strip()
    sub = get("subreddit").strip()
    if sub.lower().startswith("r/"):
        sub = sub[2:]
    return title, body, sub


def is_aita(title: str, subreddit: str) -> bool:
    """True for posts that expect an AITA verdict (subreddit or title prefix)."""
    return subreddit.strip().lower() in AITA_SUBREDDITS or bool(_AITA_TITLE.match(title or ""))


def messages_hash(messages: Messages) -> str:
    """Content hash of a message list (roles and contents)."""
    return content_hash([{"role": m["role"], "content": m["content"]} for m in messages])


# --------------------------------------------------------------------------- styles


@dataclass(frozen=True)
class PromptStyle:
    """A named prompt builder.

    ``templates`` holds every piece of text the builder uses; :func:`prompt_hash` hashes it,
    so keep *all* prompt text in there (not inline in ``builder``).
    ``builder(style, title, body, subreddit, **kwargs) -> messages``.
    """

    name: str
    templates: Mapping[str, str]
    builder: Callable[..., Messages] = field(compare=False)
    description: str = ""

    @property
    def hash(self) -> str:
        return content_hash({"name": self.name, "templates": dict(self.templates), "marker": TRUNCATION_MARKER})

    def build(self, post: Any, *, max_post_chars: int | None = DEFAULT_MAX_POST_CHARS, **kwargs: Any) -> Messages:
        title, body, sub = post_fields(post)
        if max_post_chars is not None:
            body = truncate_post(body, max_post_chars)
        return self.builder(self, title, body, sub, **kwargs)


def _post_block(t: Mapping[str, str], title: str, body: str, subreddit: str) -> str:
    sub = f"r/{subreddit}" if subreddit else "Reddit"
    return t["post"].format(subreddit=sub, title=title, body=body or t["empty_body"]).strip()


_PLAIN = {
    "post": "Subreddit: {subreddit}\nTitle: {title}\n\n{body}",
    "empty_body": "(no text, title only)",
    "user": "Here is a Reddit post.\n\n{post}\n\nWrite a comment replying to this post.",
}


def _build_plain(style: PromptStyle, title: str, body: str, subreddit: str) -> Messages:
    t = style.templates
    return [{"role": "user", "content": t["user"].format(post=_post_block(t, title, body, subreddit))}]


_HUMANLIKE = {
    "post": "Subreddit: {subreddit}\nTitle: {title}\n\n{body}",
    "empty_body": "(no text, title only)",
    "system": (
        "You are a regular Reddit user scrolling your feed, not an AI assistant. "
        "Write the comment you would actually post under this thread.\n"
        "Rules:\n"
        "- Be decisive: pick a side and commit to it. No hedging, no \"it depends\", no \"both sides\".\n"
        "- Sound like a person: casual, direct, lowercase is fine, contractions, a bit of attitude or humor "
        "if it fits. Your own opinion or experience, not advice from a professional.\n"
        "- No assistant tone: never start with \"Great question\", \"It sounds like\", \"I understand\" or "
        "\"It's important to\"; no lists, no headings, no summaries, no disclaimers, no sign-off.\n"
        "- Keep it short: one to three sentences, like most top-level comments.\n"
        "- Do not restate the post. Do not mention that you are an AI."
    ),
    "aita_rule": (
        "\n- This is an AITA-style post: start your comment with exactly one verdict, "
        "NTA, YTA, ESH, NAH or INFO, then say why in your own words."
    ),
    "user": "{post}\n\nWrite your comment. Reply with the comment text only.",
}


def _build_humanlike(style: PromptStyle, title: str, body: str, subreddit: str) -> Messages:
    t = style.templates
    system = t["system"] + (t["aita_rule"] if is_aita(title, subreddit) else "")
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": t["user"].format(post=_post_block(t, title, body, subreddit))},
    ]


STYLES: dict[str, PromptStyle] = {}


def register_style(style: PromptStyle, *, replace: bool = False) -> PromptStyle:
    """Add a style to :data:`STYLES` (``replace=True`` to overwrite an existing name)."""
    if style.name in STYLES and not replace:
        raise ValueError(f"prompt style {style.name!r} already registered")
    STYLES[style.name] = style
    return style


register_style(PromptStyle("plain", _PLAIN, _build_plain, "here is a Reddit post, write a comment"))
register_style(
    PromptStyle("humanlike", _HUMANLIKE, _build_humanlike, "engineered: decisive, casual, short, AITA verdicts")
)


def get_style(name: str) -> PromptStyle:
    """The registered style ``name``; an unknown name raises ``KeyError`` listing valid names."""
    try:
        return STYLES[name]
    except KeyError:
        raise KeyError(f"unknown prompt style {name!r}; valid styles: {', '.join(sorted(STYLES))}") from None


def build_messages(style: str, post: Any, *, max_post_chars: int | None = DEFAULT_MAX_POST_CHARS, **kwargs: Any) -> Messages:
    """Chat messages for ``post`` in ``style`` (extra kwargs go to the style's builder)."""
    return get_style(style).build(post, max_post_chars=max_post_chars, **kwargs)


def prompt_hash(style: str) -> str:
    """Content hash of the template text of ``style`` (changes whenever the prompt is edited)."""
    return get_style(style).hash


# --------------------------------------------------------------------------- remedies
# Two styles that test the study's closing suggestions: diverse system prompts (persona) and a
# small amount of real data as a seed (seeded). Both are documented in the `remedy` issue.

PERSONAS: tuple[str, ...] = (
    "a 19-year-old college student who is blunt and a little sarcastic",
    "a retired nurse in her sixties who has seen every kind of family drama",
    "a software engineer who analyses everything like a bug report",
    "a stay-at-home dad of three who is tired and has no patience for nonsense",
    "a lawyer who cares about who promised what",
    "a teenager who finds most adult problems ridiculous",
    "a therapist who notices the feelings nobody mentions",
    "a construction worker who says it straight, in few words",
    "someone who has been through the exact same situation and is still angry about it",
    "a comedian who cannot resist making a joke out of it",
    "a deeply religious grandmother with firm views on family",
    "an immigrant who sees the cultural side of the conflict",
)

# Both put what varies between samples (the persona, the examples) *after* the post, under one fixed
# system prompt: the samples of a post then share the post's prompt prefix, which a local server
# keeps in its KV cache and an API caches too. With a persona system prompt first, every sample
# would pay for reading the whole post again. The study's "diverse system prompts" are tested as diverse instructions.
_PERSONA = {
    "post": "Subreddit: {subreddit}\nTitle: {title}\n\n{body}",
    "empty_body": "(no text, title only)",
    "system": "You are reading Reddit, not assisting anyone.",
    "user": ("{post}\n\nYou are {persona}. Write the comment this person would actually post: their "
             "opinion, their tone, their words. Keep it short. Reply with the comment text only."),
}


def _build_persona(style: PromptStyle, title: str, body: str, subreddit: str, persona: str = PERSONAS[0]) -> Messages:
    t = style.templates
    return [{"role": "system", "content": t["system"]},
            {"role": "user", "content": t["user"].format(post=_post_block(t, title, body, subreddit), persona=persona)}]


_SEEDED = {
    "post": "Subreddit: {subreddit}\nTitle: {title}\n\n{body}",
    "empty_body": "(no text, title only)",
    "system": "You write Reddit comments.",
    "example": "Example comment {i}:\n{text}",
    "user": ("{post}\n\nHere are real comments that people wrote under other posts in the same "
             "subreddit:\n\n{examples}\n\nWrite one new comment for the post above. Match how real users "
             "write (length, tone, bluntness, variety), not what they say. Reply with the comment text only."),
}


def _build_seeded(style: PromptStyle, title: str, body: str, subreddit: str,
                  examples: tuple[str, ...] = ()) -> Messages:
    t = style.templates
    shots = "\n\n".join(t["example"].format(i=i + 1, text=e) for i, e in enumerate(examples))
    return [{"role": "system", "content": t["system"]},
            {"role": "user", "content": t["user"].format(post=_post_block(t, title, body, subreddit), examples=shots)}]


register_style(PromptStyle("persona", _PERSONA, _build_persona, "one persona system prompt per sample"))
register_style(PromptStyle("seeded", _SEEDED, _build_seeded, "few-shot: real replies from training posts"))


def persona_kwargs(post: Any, sample_index: int) -> dict[str, str]:
    """Sample ``i`` of every post gets persona ``i`` (cycling through :data:`PERSONAS`)."""
    return {"persona": PERSONAS[sample_index % len(PERSONAS)]}
