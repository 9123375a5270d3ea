"""llama.cpp's ``llama-server`` (the book's local server) on the book's generation workload: what sending a
post's replies as one request with ``n`` gains, and how the server fares beside a competing process.

``python -m benchmarks --only llama_server --threads 0 --out benchmarks/results/llama_server.json``;
``python -m benchmarks.bench_llama_server [--quick]`` prints the JSON only; ``--contention OUT`` measures
threads and ``--poll`` beside a busy loop instead (``benchmarks/results/llama_server_contention.json``).

The server is started by :class:`simlib.generate.LocalServer` as the pipeline starts it
(``simlib.steps.openai_endpoint``: one slot per reply in flight, the profile's seed) on the 16-bit
SmolLM2 GGUF. The requests are the gap chapter's at the ``book`` profile: its posts as ``simlib.steps``
selects them from the crawl (an evenly spaced subset of ``n_posts``), its styles, ``n_samples`` replies
per post and style seeded ``seed + i``, ``max_tokens``, ``temperature`` and ``max_post_chars``, built by
``simlib.generate.make_requests`` and sent by ``simlib.generate.generate``: as the pipeline sends them (a
post's replies in one style as one request with ``n``) and, the other arm, one request per reply
(``max_n=1``, as the client sent them before). Each measurement starts a fresh server, answers one
warm-up request for a post outside the measured ones, then times the whole ``generate`` call; the arms
alternate ``repeats`` times. Tokens are llama-server's own counters (``--metrics``): with ``n`` its
``usage`` counts the first choice only. It also reports how many prompt tokens it read.

The measurement that retired simlib's own parallel server (both servers sent ``n``: llama-server 1.19x its
tokens/s) is ``benchmarks/results/llama_server_decision.json``, made by this file's git history.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from simlib.lm import weights  # noqa: F401  (offline environment variables)



def _workload(profile: str, n_posts: int, styles: list[str] | None = None, n_samples: int | None = None,
              max_tokens: int | None = None):
    """(measured requests, warm-up request, sizes) of the gap chapter's generation at ``profile``."""
    import numpy as np

    from simlib import config, steps
    from simlib.generate import make_requests

    cfg = config.load(profile)
    real, _ = steps.real_responses(cfg)
    posts = steps.test_posts(cfg, real)
    if len(posts) < 2:
        raise RuntimeError(f"the {profile} profile selects {len(posts)} posts; the benchmark needs 2")
    n = min(n_posts, len(posts) - 1)  # one post is kept back for the warm-up
    picked = np.unique(np.linspace(0, len(posts) - 2, n).round().astype(int))
    styles = styles or list(cfg.styles)

    def reqs(rows, k: int, tokens: int):
        return make_requests(rows, styles, k, None, temperature=cfg.temperature, top_p=cfg.top_p,
                             max_tokens=tokens, seed=cfg.seed, max_post_chars=cfg.max_post_chars,
                             style_kwargs=steps.style_kwargs(cfg, styles, real))

    measured = reqs(posts.iloc[picked], n_samples or cfg.n_samples, max_tokens or cfg.max_tokens)
    warm = reqs(posts.iloc[[len(posts) - 1]], 1, 4)[:1]
    sizes = {"profile": profile, "posts_available": int(len(posts)), "posts": int(len(picked)), "styles": styles,
             "n_samples": n_samples or cfg.n_samples, "requests": len(measured),
             "max_tokens": max_tokens or cfg.max_tokens, "temperature": cfg.temperature, "top_p": cfg.top_p,
             "max_post_chars": cfg.max_post_chars, "concurrency": cfg.concurrency, "seed": cfg.seed}
    return measured, warm, sizes


def _counters(base_url: str) -> dict[str, float]:
    """llama-server's token counters (``--metrics``): prompt tokens read (those found cached excluded)
    and tokens generated, over every choice of a request (its ``usage`` counts the first choice's)."""
    import urllib.request

    names = {"llamacpp:prompt_tokens_total": "read", "llamacpp:tokens_predicted_total": "predicted"}
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/metrics", timeout=30) as r:
        found = {names[k]: float(v) for k, v in (ln.split()[:2] for ln in r.read().decode().splitlines()
                                                 if ln.split()[:1] and ln.split()[0] in names)}
    if len(found) != len(names):
        raise RuntimeError(f"llama-server's /metrics lacks {set(names) - set(found)}")
    return found


def _chat(base_url: str, body: dict[str, Any]) -> dict[str, Any]:
    import urllib.request

    req = urllib.request.Request(f"{base_url}/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=900) as r:
        return json.loads(r.read())


def _send_pipeline(reqs, url: str, model: str, conc: int, store: Path, max_n: int | None = None,
                   timeout: float = 900.0) -> list[dict[str, Any]]:
    """The pipeline's way: ``simlib.generate.generate``, a post's replies as one request with ``n``
    (``max_n=1``: one request per reply)."""
    from simlib.cache import JsonlStore
    from simlib.generate import generate

    report = generate(reqs, store, url, model, concurrency=conc, progress=False, timeout=timeout,
                      max_retries=1 if timeout >= 900.0 else 0, max_n=max_n)
    if report.n_failed or report.n_ok != len(reqs):
        raise RuntimeError(f"{store.stem}: {report}")
    return [{**(r.get("usage") or {}), "finish_reason": r.get("finish_reason")} for r in JsonlStore(store)]


ARMS = {"llama_server": None, "llama_server_one_per_reply": 1}  # name -> the client's max_n


def _measure(arm: str, reqs, warm, sizes: dict, tmp: Path, tag: str) -> dict[str, Any]:
    """One fresh server for ``arm``: warm-up request, then the timed sending of ``reqs``."""
    from simlib.generate import LocalServer, generate

    conc = sizes["concurrency"]
    metrics = True  # llama-server's counters: tokens written over every choice, prompt tokens read
    from simlib.generate.server import default_threads

    with LocalServer(seed=sizes["seed"], n_threads=default_threads(), slots=conc,
                     log_path=tmp / f"{tag}.log", extra_args=["--metrics"] if metrics else ()) as srv:
        generate(warm, tmp / f"{tag}-warm.jsonl", srv.base_url, srv.model, concurrency=1, progress=False,
                 timeout=300.0, max_retries=1)
        before = _counters(srv.base_url) if metrics else {}
        t0 = time.perf_counter()
        usage = _send_pipeline(reqs, srv.base_url, srv.model, conc, tmp / f"{tag}.jsonl", ARMS[arm])
        wall = time.perf_counter() - t0
        count = {k: int(v - before[k]) for k, v in _counters(srv.base_url).items()} if metrics else {}
    toks = count["predicted"] if metrics else sum(int(u.get("completion_tokens") or 0) for u in usage)
    n_length = sum(u["finish_reason"] == "length" for u in usage)
    return {"wall_s": round(wall, 2), "completion_tokens": toks,
            "prompt_tokens": sum(int(u.get("prompt_tokens") or 0) for u in usage),
            "tok_per_s": round(toks / wall, 2), "finish_length": int(n_length),
            **({"prompt_tokens_read": count["read"], "tokens_predicted": count["predicted"]} if count else {})}


def _summary(reps: list[dict[str, Any]]) -> dict[str, Any]:
    if not reps:
        return {}
    keys = ("wall_s", "tok_per_s", "completion_tokens", "prompt_tokens", "prompt_tokens_read", "tokens_predicted",
            "finish_length")
    return {"median_wall_s": round(statistics.median(r["wall_s"] for r in reps), 2),
            "median_tok_per_s": round(statistics.median(r["tok_per_s"] for r in reps), 2),
            **({"median_prompt_tokens_read": statistics.median(r["prompt_tokens_read"] for r in reps)}
               if all("prompt_tokens_read" in r for r in reps) else {}),
            **{k: [r[k] for r in reps] for k in keys if all(k in r for r in reps)}}


def run(quick: bool = False, repeats: int | None = None, n_posts: int | None = None,
        budget_s: float = 420.0) -> dict[str, Any]:
    """Both arms on the same requests, alternating; medians and their ratio.

    ``quick``: the ``smoke`` profile, one post, one style, two replies of 8 tokens, one repetition
    (checks that everything still runs; the ratio means nothing). Full: the ``book`` profile, 6
    posts, 3 repetitions. A repetition is not started once ``budget_s`` seconds have passed (the
    numbers say how many ran).
    """
    repeats = repeats or (1 if quick else 3)
    if quick:
        reqs, warm, sizes = _workload("smoke", n_posts or 1, styles=["plain"], n_samples=2, max_tokens=8)
    else:
        reqs, warm, sizes = _workload("book", n_posts or 6)
    reps: dict[str, list[dict[str, Any]]] = {a: [] for a in ARMS}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-llama-server-") as d:
        for k in range(repeats):
            if k and time.monotonic() - t0 > budget_s:
                break
            for arm in ARMS:
                reps[arm].append(_measure(arm, reqs, warm, sizes, Path(d), f"{arm}-{k}"))
    res: dict[str, Any] = {"workload": sizes, "replies": len(reqs), "repeats": len(reps["llama_server"]),
                           "order": " ".join(ARMS) + " (each repetition, a fresh server each)",
                           "threads": "default_threads() (cores - 1), --poll 0", "weights": "F16 GGUF (smollm2_gguf_f16)",
                           "arms": {"llama_server": "the pipeline's client: n per post and style",
                                    "llama_server_one_per_reply": "the client with max_n=1: one request per reply"}}
    for a in ARMS:
        res[a] = _summary(reps[a])
    grp, one = (res[a]["median_tok_per_s"] for a in ARMS)
    res["ratio_n_vs_one_per_reply"] = round(grp / one, 3) if grp and one else None
    # the requests' prompts, each counted once (a request with n reads its prompt once): the least possible
    res["prompt_tokens_once_per_post"] = res["llama_server"]["prompt_tokens"][0]
    return res


SPIN = "while True: pass"  # one CPU-bound competitor, as another engineer's job would be
WORST_RATIO = 2.0  # the goal: at most twice as slow beside one competitor
IDLE_KEEP = 0.9  # ... while idle throughput stays within 10% of today's setting
CAP_S = 90.0  # a measurement stops here (a spinning setting can be many times slower)


def _contended(settings: dict[str, int], reqs, warm, sizes: dict, tmp: Path, tag: str, rival: bool) -> dict[str, Any]:
    """One fresh llama-server with ``settings`` (threads, poll), measured alone or beside a busy loop."""
    from simlib.generate import LocalServer, generate

    with LocalServer(seed=sizes["seed"], n_threads=settings["threads"], poll=settings["poll"],
                     slots=sizes["concurrency"], log_path=tmp / f"{tag}.log", extra_args=["--metrics"]) as srv:
        generate(warm, tmp / f"{tag}-warm.jsonl", srv.base_url, srv.model, concurrency=1, progress=False,
                 timeout=300.0, max_retries=1)
        before = _counters(srv.base_url)
        spin = subprocess.Popen([sys.executable, "-c", SPIN]) if rival else None
        capped = False
        try:
            t0 = time.perf_counter()
            try:
                _send_pipeline(reqs, srv.base_url, srv.model, sizes["concurrency"], tmp / f"{tag}.jsonl", timeout=CAP_S)
            except RuntimeError:  # not done within CAP_S: the tokens written so far give the rate
                capped = True
            wall = time.perf_counter() - t0
        finally:
            if spin is not None:
                spin.kill()
                spin.wait()
        toks = int(_counters(srv.base_url)["predicted"] - before["predicted"])
    return {"wall_s": round(wall, 2), "tokens": toks, "tok_per_s": round(toks / wall, 2), "capped": capped}


def judge(rows: dict[str, dict[str, Any]], today: str) -> str:
    """The contention rule: of the settings at least :data:`IDLE_KEEP` as fast alone as ``today``'s (every
    setting, when today's wrote nothing), the fastest beside the competitor (then the fastest alone)."""
    base = rows[today]["alone_tok_per_s"]
    for row in rows.values():
        row["idle_vs_today"] = round(row["alone_tok_per_s"] / base, 3) if base else None
    ok = [n for n, r in rows.items() if r["alone_tok_per_s"] > 0 and (not base or r["idle_vs_today"] >= IDLE_KEEP)]
    return max(ok, key=lambda n: (rows[n]["beside_tok_per_s"], rows[n]["alone_tok_per_s"])) if ok else today


def contention(quick: bool = False, repeats: int = 1, n_posts: int = 1, budget_s: float = 540.0) -> dict[str, Any]:
    """llama-server's thread count (cores, cores - 1) and polling (``--poll`` 0, 50) alone and beside one
    CPU-bound process, alternating; the setting with the best worst case that keeps idle throughput."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if quick:
        reqs, warm, sizes = _workload("smoke", 1, styles=["plain"], n_samples=2, max_tokens=8)
        repeats = 1
    else:
        reqs, warm, sizes = _workload("book", n_posts, styles=["plain"])
    grid = {f"threads {t}, poll {p}": {"threads": t, "poll": p}
            for t in dict.fromkeys([cores, max(1, cores - 1)]) for p in (50, 0)}
    reps: dict[str, dict[str, list]] = {k: {"alone": [], "beside": []} for k in grid}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-contention-") as d:
        for k in range(repeats):
            if k and time.monotonic() - t0 > budget_s:
                break
            for name, st in grid.items():
                for rival in (False, True):
                    key = "beside" if rival else "alone"
                    reps[name][key].append(_contended(st, reqs, warm, sizes, Path(d), f"{name}-{key}-{k}".replace(" ", "")
                                                      .replace(",", "_"), rival))
    today = f"threads {cores}, poll 50"  # what the pipeline ran before this measurement
    rows: dict[str, Any] = {}
    for name, r in reps.items():
        alone = statistics.median(x["tok_per_s"] for x in r["alone"])
        beside = statistics.median(x["tok_per_s"] for x in r["beside"])
        rows[name] = {**grid[name], "alone_tok_per_s": alone, "beside_tok_per_s": beside,
                      "slowdown": round(alone / beside, 2) if beside else None, "runs": r}
    best = judge(rows, today)
    return {"workload": sizes, "replies": len(reqs), "repeats": len(next(iter(reps.values()))["alone"]),
            "cores": cores, "competitor": f"python -c '{SPIN}' (one process, not pinned)",
            "order": "each setting alone then beside the competitor, settings in turn, a fresh server each",
            "settings": rows, "today": today,
            "rule": (f"among the settings whose idle tokens/s is at least {IDLE_KEEP:.0%} of today's ({today}), the one "
                     f"with the most tokens/s beside the competitor (goal: at most {WORST_RATIO:g}x slower)"),
            "choice": "not judged (quick)" if quick else best,
            "goal_met": None if quick else bool(rows[best]["slowdown"] and rows[best]["slowdown"] <= WORST_RATIO)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_llama_server", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--posts", type=int, default=None)
    ap.add_argument("--contention", type=Path, default=None, metavar="OUT",
                    help="measure llama-server's threads and --poll beside a competing process instead; write OUT")
    ns = ap.parse_args(argv)
    if ns.contention is None:
        print(json.dumps(run(ns.quick, ns.repeats, ns.posts), indent=2))
        return 0
    from benchmarks.__main__ import machine_info

    info = machine_info()
    res = contention(ns.quick, ns.repeats or 1, ns.posts or 1)
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    ns.contention.write_text(json.dumps({"machine": info, "contention": res}, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
