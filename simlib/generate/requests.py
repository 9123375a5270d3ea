"""Generation requests, the records they leave in the store, and the secrets rule.

One :class:`GenRequest` is one sample: one post, one prompt style, one ``sample_index``; the seed
of sample ``i`` is ``base_seed + i`` (see :func:`make_requests`). The client sends the samples that
share their messages as one request with ``n`` (:mod:`simlib.generate.grouping`) and stores each choice
under its sample's key. Both the online client
(:mod:`simlib.generate.client`) and the Batch API (:mod:`simlib.generate.batch`) write their
results through :func:`make_record` and :func:`make_failure`.

The API key is read only from the environment variable ``api_key_env`` (:func:`api_key`) and is
never written to the store, the failures file, logs or the report (:func:`scrub`).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from simlib.cache import JsonlStore, content_hash
from simlib.generate.prompts import DEFAULT_MAX_POST_CHARS, build_messages, messages_hash, post_fields

__all__ = ["LOCAL_API_KEY", "GenRequest", "make_requests", "GenerationReport", "estimate_cost", "failures_path",
           "STORE_COLUMNS", "load_store", "load_failures", "MalformedResponse", "completion_fields", "make_record",
           "make_failure", "scrub", "resolve_requests", "api_key"]


LOCAL_API_KEY = "sk-local"


@dataclass(frozen=True)
class GenRequest:
    """One chat-completion request = one sample.

    ``key`` is a content hash of everything that determines the output distribution:
    post id, style, sample index, model, the messages (hence the prompt template) and the
    sampling parameters (temperature, top_p, max_tokens, seed).
    """

    post_id: str
    style: str
    sample_index: int
    messages: Sequence[Mapping[str, str]]
    model: str | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None

    def __post_init__(self) -> None:
        # freeze the messages so the key cannot go stale
        object.__setattr__(self, "messages", tuple({"role": m["role"], "content": m["content"]} for m in self.messages))

    @functools.cached_property
    def messages_hash(self) -> str:
        return messages_hash(list(self.messages))

    @functools.cached_property
    def key(self) -> str:
        return content_hash(
            {
                "post_id": str(self.post_id),
                "style": self.style,
                "sample_index": int(self.sample_index),
                "model": self.model,
                "messages": self.messages_hash,
                "temperature": self.temperature,
                "top_p": self.top_p,
                "max_tokens": self.max_tokens,
                "seed": self.seed,
            }
        )

    def body(self, *, send_seed: bool = True, token_param: str = "max_tokens") -> dict[str, Any]:
        """The JSON body of ``POST /v1/chat/completions`` for this request."""
        if not self.model:
            raise ValueError(f"request {self.post_id}/{self.style}/{self.sample_index} has no model")
        b: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in self.messages],
            "temperature": self.temperature,
            "top_p": self.top_p,
            token_param: self.max_tokens,
        }
        if send_seed and self.seed is not None:
            b["seed"] = int(self.seed)
        return b

    def meta(self) -> dict[str, Any]:
        """The request fields every store/failure record carries."""
        return {
            "key": self.key,
            "post_id": str(self.post_id),
            "style": self.style,
            "sample_index": int(self.sample_index),
            "model": self.model,
        }


def _post_id(post: Any) -> str:
    for name in ("post_id", "id", "name"):
        v = post.get(name) if isinstance(post, Mapping) else getattr(post, name, None)
        if v is not None:
            return str(v)
    raise ValueError("post has no post_id/id field")


def make_requests(
    posts: Iterable[Any],
    styles: str | Sequence[str],
    n_samples: int,
    model: str | None,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_tokens: int = 256,
    seed: int | None = 0,
    max_post_chars: int | None = DEFAULT_MAX_POST_CHARS,
    style_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[GenRequest]:
    """``len(posts) * len(styles) * n_samples`` requests, sample ``i`` seeded ``seed + i``.

    ``posts``: mappings/objects with ``post_id`` (or ``id``), ``title``, ``body``
    (or ``selftext``), ``subreddit``; a pandas DataFrame is iterated by rows.
    ``style_kwargs[style]`` is passed to that style's builder: a mapping (the same for every
    sample), or a callable ``(post, sample_index) -> mapping`` (e.g. one persona per sample, or the
    few-shot examples of a post's subreddit).
    ``seed=None`` sends no seed.
    """
    if isinstance(styles, str):
        styles = [styles]
    if hasattr(posts, "to_dict") and hasattr(posts, "columns"):  # DataFrame
        posts = posts.to_dict("records")
    style_kwargs = style_kwargs or {}
    out: list[GenRequest] = []
    for post in posts:
        pid = _post_id(post)
        title, body, _ = post_fields(post)
        if not title and not body:
            raise ValueError(f"post {pid!r} has an empty title and body: there is nothing to reply to "
                             "(simlib.data's deleted_posts filter removes such posts)")
        for style in styles:
            kw = style_kwargs.get(style, {})
            msgs = None if callable(kw) else build_messages(style, post, max_post_chars=max_post_chars, **dict(kw))
            for i in range(n_samples):
                if callable(kw):  # per-sample arguments, e.g. a different persona for every sample
                    msgs = build_messages(style, post, max_post_chars=max_post_chars, **dict(kw(post, i)))
                out.append(
                    GenRequest(
                        post_id=pid,
                        style=style,
                        sample_index=i,
                        messages=msgs,
                        model=model,
                        temperature=temperature,
                        top_p=top_p,
                        max_tokens=max_tokens,
                        seed=None if seed is None else seed + i,
                    )
                )
    return out


@dataclass
class GenerationReport:
    """What a :func:`generate` / batch run did. Contains no secrets."""

    n_requested: int = 0  # unique keys asked for
    n_cached: int = 0  # already in the store, not sent
    n_ok: int = 0  # new responses stored by this run
    n_failed: int = 0  # still failing after all retries (see failures file)
    n_retries: int = 0  # extra attempts made (each retry counts once)
    n_restarts: int = 0  # times the local server died mid-run and was started again
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float | None = None  # estimate for this run's new tokens; None without prices
    wall_s: float = 0.0
    failed_keys: list[str] = field(default_factory=list)
    retry_reasons: dict[str, int] = field(default_factory=dict)  # error kind -> attempts that failed
    store_path: str = ""
    failures_path: str = ""
    mode: str = "online"

    @property
    def complete(self) -> bool:
        return self.n_failed == 0 and self.n_cached + self.n_ok == self.n_requested

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        cost = "n/a" if self.cost_usd is None else f"${self.cost_usd:.4f}"
        return (
            f"{self.mode}: {self.n_requested} requested, {self.n_cached} cached, {self.n_ok} new, "
            f"{self.n_failed} failed, {self.n_retries} retries, tokens in/out {self.tokens_in}/{self.tokens_out}, "
            f"cost {cost}, {self.wall_s:.1f}s"
        )


def estimate_cost(tokens_in: int, tokens_out: int, price_per_1k_in: float | None, price_per_1k_out: float | None) -> float | None:
    """USD for the given token counts; ``None`` when no price is given."""
    if price_per_1k_in is None and price_per_1k_out is None:
        return None
    return tokens_in / 1000 * (price_per_1k_in or 0.0) + tokens_out / 1000 * (price_per_1k_out or 0.0)


def failures_path(store_path: str | os.PathLike) -> Path:
    """``responses.jsonl`` -> ``responses.failures.jsonl`` (same folder)."""
    p = Path(store_path)
    return p.with_name(p.stem + ".failures.jsonl")


STORE_COLUMNS = [
    "key", "post_id", "style", "sample_index", "model", "text", "finish_reason",
    "prompt_tokens", "completion_tokens", "latency_s", "created",
]


def load_store(path: str | os.PathLike):
    """The store as a DataFrame, one row per key; ``usage`` flattened into
    ``prompt_tokens``/``completion_tokens`` columns."""
    import pandas as pd

    rows = []
    for rec in JsonlStore(path):
        rec = dict(rec)
        usage = rec.pop("usage", None) or {}
        rec["prompt_tokens"] = usage.get("prompt_tokens")
        rec["completion_tokens"] = usage.get("completion_tokens")
        rows.append(rec)
    if not rows:
        return pd.DataFrame(columns=STORE_COLUMNS)
    df = pd.DataFrame(rows)
    front = [c for c in STORE_COLUMNS if c in df.columns]
    return df[front + [c for c in df.columns if c not in front]]


def load_failures(store_path: str | os.PathLike):
    """All failure records of a store (one per key and run) with a ``resolved`` column
    (True once a later run stored a response for that key)."""
    import pandas as pd

    fails = list(JsonlStore(failures_path(store_path)))
    if not fails:
        return pd.DataFrame(columns=["key", "request_key", "error_type", "error", "resolved"])
    done = JsonlStore(store_path).keys()
    df = pd.DataFrame(fails)
    df["resolved"] = df["request_key"].isin(done)
    return df


class MalformedResponse(Exception):
    """The server answered 200 but the body is not a usable chat completion."""


def _usage(obj: Any) -> dict[str, int]:
    u = obj.get("usage") if isinstance(obj, Mapping) else getattr(obj, "usage", None)
    if u is None:
        return {"prompt_tokens": 0, "completion_tokens": 0}
    get = (lambda k: u.get(k)) if isinstance(u, Mapping) else (lambda k: getattr(u, k, None))
    return {"prompt_tokens": int(get("prompt_tokens") or 0), "completion_tokens": int(get("completion_tokens") or 0)}


def completion_fields(completion: Any) -> dict[str, Any]:
    """``text, finish_reason, usage, response_model, created`` from a chat completion
    (an ``openai`` model object or its JSON dict); raises :class:`MalformedResponse`."""
    if hasattr(completion, "model_dump"):
        completion = completion.model_dump()
    if not isinstance(completion, Mapping):
        raise MalformedResponse(f"expected a JSON object, got {type(completion).__name__}")
    choices = completion.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], Mapping):
        raise MalformedResponse("response has no choices")
    ch = choices[0]
    msg = ch.get("message")
    if not isinstance(msg, Mapping):
        raise MalformedResponse("choice has no message")
    text = msg.get("content")
    finish = ch.get("finish_reason")
    if text is None:
        if finish in ("length", "content_filter"):
            text = ""
        else:
            raise MalformedResponse("message has no content")
    if not isinstance(text, str):
        raise MalformedResponse("message content is not a string")
    return {
        "text": text,
        "finish_reason": finish,
        "usage": _usage(completion),
        "response_model": completion.get("model"),
        "created": completion.get("created"),
    }


def make_record(req: GenRequest, fields: Mapping[str, Any], *, latency_s: float | None, attempts: int, source: str,
                n_choices: int = 1, usage_estimated: bool = False) -> dict[str, Any]:
    """The store record of ``req``'s reply; ``n_choices`` > 1: one choice of a request with ``n``, whose
    ``usage`` is this choice's share of the response's (``usage_estimated``: its completion tokens are
    an estimate, see :func:`simlib.generate.grouping.first_choice_usage`)."""
    rec = req.meta()
    rec.update(
        text=fields["text"],
        finish_reason=fields["finish_reason"],
        usage=fields["usage"],
        latency_s=None if latency_s is None else round(latency_s, 4),
        created=fields.get("created") or int(time.time()),
        response_model=fields.get("response_model"),
        temperature=req.temperature,
        top_p=req.top_p,
        max_tokens=req.max_tokens,
        seed=req.seed,
        messages_hash=req.messages_hash,
        attempts=attempts,
        source=source,
    )
    if n_choices > 1:
        rec["n_choices"] = n_choices
    if usage_estimated:
        rec["usage_estimated"] = True
    return rec


def make_failure(req: GenRequest, *, run_id: str, error_type: str, error: str, status_code: int | None, attempts: int, source: str) -> dict[str, Any]:
    rec = req.meta()
    rec["request_key"] = rec.pop("key")
    rec.update(
        key=f"{req.key}@{run_id}",
        run_id=run_id,
        error_type=error_type,
        status_code=status_code,
        error=error,
        attempts=attempts,
        created=int(time.time()),
        source=source,
    )
    return rec


def scrub(text: str, secret: str | None, limit: int = 1000) -> str:
    text = str(text)
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text[:limit]


def resolve_requests(requests: Iterable[GenRequest], model: str | None) -> list[GenRequest]:
    """Fill missing models, check consistency, drop duplicate keys (first kept)."""
    out: dict[str, GenRequest] = {}
    for r in requests:
        if not r.model:
            if not model:
                raise ValueError("request without a model and no model= given")
            r = dataclasses.replace(r, model=model)
        elif model and r.model != model:
            raise ValueError(f"request model {r.model!r} differs from model={model!r}")
        out.setdefault(r.key, r)
    return list(out.values())


def api_key(api_key_env: str) -> str:
    return os.environ.get(api_key_env) or LOCAL_API_KEY
