"""Generating LLM comments for Reddit posts: prompts, a resumable OpenAI-compatible client that sends
a post's samples as one request with ``n`` (:mod:`simlib.generate.grouping`), a local llama.cpp server
and the OpenAI Batch API (one request per sample).

Typical use::

    from simlib.generate import make_requests, generate, load_store, LocalServer

    reqs = make_requests(posts, ["plain", "humanlike"], n_samples=5, model=None, max_tokens=64)
    with LocalServer(slots=4) as srv:
        report = generate(reqs, "data/gen/smollm2.jsonl", srv.base_url, srv.model, concurrency=1)
    df = load_store("data/gen/smollm2.jsonl")

Importing this package needs neither llama.cpp nor a network; ``openai`` is imported
when a run starts.
"""
from __future__ import annotations

from simlib.generate.client import agenerate, generate
from simlib.generate.requests import (GenerationReport, GenRequest, estimate_cost, failures_path, load_failures,
                                      load_store, make_requests)
from simlib.generate.batch import run_batch
from simlib.generate.prompts import STYLES, build_messages, get_style, prompt_hash, register_style
from simlib.generate.server import LocalServer

__all__ = [
    "GenRequest",
    "GenerationReport",
    "make_requests",
    "generate",
    "agenerate",
    "load_store",
    "load_failures",
    "failures_path",
    "estimate_cost",
    "STYLES",
    "build_messages",
    "get_style",
    "prompt_hash",
    "register_style",
    "LocalServer",
    "run_batch",
]

