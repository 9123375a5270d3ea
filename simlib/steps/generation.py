"""Synthetic replies through the OpenAI-compatible client: the endpoint (the local server or an
API), the requests of each style, and the temperature-1.0 control set."""
from __future__ import annotations

import contextlib
import dataclasses

import pandas as pd

from simlib.config import Config

__all__ = ["Endpoint", "openai_endpoint", "endpoint_model", "style_kwargs", "synthetic_responses", "t1_sizes", "synthetic_t1"]


class Endpoint(tuple):
    """``(base_url, model)``; ``server``: the local server behind it (restarted if it dies), else None."""

    def __new__(cls, base_url: str, model: str, server=None):
        obj = super().__new__(cls, (base_url, model))
        obj.server = server
        return obj


@contextlib.contextmanager
def openai_endpoint(cfg: Config):
    """The :class:`Endpoint` (base_url, model) the config names; starts the local server when empty.

    The ``ci`` and ``smoke`` profiles serve SmolLM2 from its package through llama.cpp on
    127.0.0.1 (``cfg.local_server``) and stop it afterwards; ``paper`` names the OpenAI API. The key is read by the
    client from the environment only.
    """
    if cfg.api_base_url:
        yield Endpoint(cfg.api_base_url, cfg.generator)
        return
    from simlib.generate import LocalServer
    from simlib.generate.server import default_threads

    if cfg.generator != "smollm2-135m":
        raise ValueError(f"the local server serves smollm2-135m only; generator is {cfg.generator!r} "
                         "(set api_base_url to use another model)")
    # llama-server decodes cfg.concurrency replies together (a post's replies come as one request with
    # n). One core fewer than the machine has, and no spinning (the server's default): measured best beside
    # a competing process.
    with LocalServer(seed=cfg.seed, n_threads=default_threads(), log_path=cfg.path("logs", "llama-server.log"),
                     backend=cfg.local_server, slots=cfg.concurrency) as srv:
        yield Endpoint(srv.base_url, srv.model, srv)


def endpoint_model(cfg: Config) -> str:
    """The model name requests carry (and cache keys hash) for the configured endpoint."""
    if cfg.api_base_url:
        return cfg.generator
    from simlib.generate.server import model_alias

    return model_alias(cfg.local_server)


def style_kwargs(cfg: Config, styles: list[str], real: pd.DataFrame | None = None) -> dict:
    """Per-sample builder arguments of the styles that need them: one persona per sample
    (``persona``), and ``seed_examples`` real replies from *training* posts (``seeded``)."""
    from simlib.generate.prompts import persona_kwargs
    from simlib.generate.seeding import seeded_kwargs

    out: dict = {}
    if "persona" in styles:
        out["persona"] = persona_kwargs
    if "seeded" in styles:
        if real is None:
            raise ValueError("the seeded style needs the real responses (real=...) to draw its examples from")
        out["seeded"] = seeded_kwargs(real, k=cfg.seed_examples, seed=cfg.seed, max_chars=cfg.seed_example_chars)
    return out


def synthetic_responses(cfg: Config, posts: pd.DataFrame, styles: list[str] | None = None,
                        endpoint: tuple[str, str] | None = None,
                        real: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict]:
    """``n_samples`` synthetic responses per post and style, through the OpenAI-compatible client.

    Responses are appended to ``<work_dir>/generations.jsonl`` the moment they arrive, keyed by
    (post, style, sample index, model, prompt, sampling parameters), so a re-run sends only what is
    missing; when nothing is missing no server is started. ``real`` (the real responses with their
    split) is needed by the ``seeded`` style only. Returns the store rows for these requests and the
    run report.
    """
    from simlib.generate import generate, load_store, make_requests
    from simlib.generate.local import generate_local
    from simlib.generate.prices import price_per_1k

    styles = styles or cfg.styles
    store = cfg.path("generations.jsonl")
    model = endpoint[1] if endpoint else endpoint_model(cfg)
    reqs = make_requests(posts, styles, cfg.n_samples, model, temperature=cfg.temperature,
                         top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=cfg.seed,
                         max_post_chars=cfg.max_post_chars, style_kwargs=style_kwargs(cfg, styles, real))
    keys = {r.key for r in reqs}
    have = set(load_store(store)["key"]) if store.exists() else set()
    if keys <= have:
        report = {"n_requested": len(keys), "n_cached": len(keys), "n_ok": 0, "n_failed": 0, "n_retries": 0,
                  "n_restarts": 0, "tokens_in": 0, "tokens_out": 0, "cost_usd": None}
    elif cfg.use_batch_api and cfg.api_base_url:
        from simlib.generate import run_batch

        # Batch API: the discounted price, results within 24 h; a re-run resumes submitted batches.
        report = run_batch(reqs, store, cfg.api_base_url, model, **price_per_1k(model, batch=True)).to_dict()
    else:
        with contextlib.ExitStack() as stack:
            endpoint = endpoint or stack.enter_context(openai_endpoint(cfg))
            base_url, model = endpoint
            # The local server decodes every request it accepted, even one whose client gave up: a
            # short timeout on a busy machine only queues retries behind the abandoned requests.
            kw = dict(concurrency=cfg.concurrency, progress=True, timeout=60.0 if cfg.api_base_url else 900.0,
                      **price_per_1k(model))
            srv = getattr(endpoint, "server", None)
            report = (generate_local(srv, reqs, store, **kw) if srv is not None
                      else generate(reqs, store, base_url, model, **kw)).to_dict()
    out = load_store(store)
    out = out[out["key"].isin(keys)].reset_index(drop=True)
    return out, report


def t1_sizes(cfg: Config) -> dict:
    """The extra temperature-1.0 sets of the log-prob chapter: ``styles`` sampled, ``samples``
    per post (synthetic and the scorer's own alike), and whether they are extra at all (a profile
    that samples at 1.0 already reuses its main sets)."""
    styles = list(getattr(cfg, "t1_styles", []) or cfg.styles)
    samples = int(getattr(cfg, "t1_samples", 0) or cfg.n_per_group)
    return {"styles": styles, "samples": samples, "extra": float(cfg.temperature) != 1.0}


def synthetic_t1(cfg: Config, posts: pd.DataFrame, real: pd.DataFrame | None = None) -> pd.DataFrame:
    """The generator's replies at temperature 1.0: ``t1_samples`` per post in each of ``t1_styles``
    (:func:`t1_sizes`), through :func:`synthetic_responses` (so cached in ``generations.jsonl``,
    whose keys hold the temperature). Columns post_id, source (the style), text, temperature."""
    size = t1_sizes(cfg)
    sub = dataclasses.replace(cfg, temperature=1.0, n_samples=size["samples"])
    rows, _ = synthetic_responses(sub, posts, size["styles"], real=real)
    out = pd.DataFrame({"post_id": rows["post_id"], "source": rows["style"],
                        "text": rows["text"].fillna("").astype(str).str.strip(), "temperature": 1.0})
    return out[out["text"] != ""].reset_index(drop=True)
