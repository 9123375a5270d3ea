"""The Performance chapter's local-server section: the sentences and tables of the two server benchmarks
(``benchmarks/results/llama_server_decision.json``: llama-server against simlib's parallel server, both sent
``n``; ``benchmarks/results/llama_server_contention.json``: threads and ``--poll`` beside a competitor).
Every sentence is chosen by the numbers it reports."""
from __future__ import annotations

from typing import Any

import pandas as pd

__all__ = ["llama_server_sentence", "llama_server_table", "contention_sentence", "contention_table"]

_ARM_NAMES = {"parallel": "simlib's parallel server, n per post", "llama_server": "llama-server, n per post"}


def llama_server_sentence(res: dict[str, Any] | None) -> str:
    """What the decision benchmark measured and what the rule made of it."""
    if not res or not res.get("ratio_llama_server_vs_parallel"):
        return "The two servers have not been measured against each other on this machine yet."
    par, srv, r, rule = res["parallel"], res["llama_server"], res["ratio_llama_server_vs_parallel"], res["adopt_ratio"]
    w = res["workload"]
    verdict = (f"at least the rule's {rule:.2f}, so the book adopted llama-server and retired its own server"
               if r >= rule else f"short of the rule's {rule:.2f}, so the book keeps its own server, which gets `n` too")
    read = (f" llama-server read {srv['median_prompt_tokens_read']:,.0f} prompt tokens, where reading each post's "
            f"prompt once per style takes {res['prompt_tokens_once_per_post']:,}."
            if srv.get("median_prompt_tokens_read") is not None and res.get("prompt_tokens_once_per_post") else "")
    return (f"On {w['posts']} post(s) x {len(w['styles'])} styles x {w['n_samples']} replies ({res['replies']} replies, "
            f"{res['repeats']} repetitions, {res.get('threads', '?')} thread(s) a server, a post's replies in one style "
            f"as one request) llama-server wrote "
            f"{srv['median_tok_per_s']:.1f} completion tokens per second and the book's own server "
            f"{par['median_tok_per_s']:.1f}, a ratio of {r:.2f}: {verdict}.{read}")


def llama_server_table(res: dict[str, Any] | None) -> pd.DataFrame:
    if not res or not res.get("parallel"):
        return pd.DataFrame({"median tokens/s": ["n/a"]}, index=["no server comparison recorded"])
    return pd.DataFrame({_ARM_NAMES[a]: {"median wall time (s)": res[a]["median_wall_s"],
                                         "median tokens/s": res[a]["median_tok_per_s"],
                                         "tokens/s, each repetition": ", ".join(f"{v:.1f}" for v in res[a]["tok_per_s"])}
                         for a in _ARM_NAMES if res.get(a)}).T


def contention_sentence(c: dict[str, Any] | None) -> str:
    """The setting the contention rule chose, its slowdown beside the competitor and against the goal."""
    if not c or c.get("choice") not in (c or {}).get("settings", {}):
        return "The server's thread and polling settings have not been measured beside a competitor on this machine yet."
    best, today = c["settings"][c["choice"]], c["settings"][c["today"]]
    goal = ("within" if c["goal_met"] else "short of") + " the goal of at most twice as slow"
    if c["choice"] == c["today"]:
        chose = "No other setting did better by the rule, so the default stays"
    else:
        chose = (f"The rule chose {c['choice']}: {best['alone_tok_per_s']:.1f} tokens per second without the busy loop "
                 f"and {best['beside_tok_per_s']:.1f} beside it ({best['slowdown']:.2f} times as slow), which the local "
                 "server now uses")
    was = (f"wrote no token within the measurement's cap, with or without the busy loop" if not today["alone_tok_per_s"]
           else f"fell from {today['alone_tok_per_s']:.1f} to {today['beside_tok_per_s']:.1f} tokens per second beside "
                f"the busy loop ({today['slowdown']:.2f} times as slow)")
    return (f"On this shared machine llama.cpp's default ({c['today']}) {was}. {chose}; {goal}. Other jobs held "
            "the cores throughout, so 'without the busy loop' is not an idle machine: the comparison between "
            "settings, alternated run by run, holds better than the absolute speeds, and how 1 thread compares "
            "with 2 on an idle machine was not measured.")


def contention_table(c: dict[str, Any] | None) -> pd.DataFrame:
    if not c or not c.get("settings"):
        return pd.DataFrame({"tokens/s": ["n/a"]}, index=["no contention measurement recorded"])
    return pd.DataFrame({name: {"tokens/s alone": r["alone_tok_per_s"], "tokens/s beside a busy process": r["beside_tok_per_s"],
                                "times as slow": r["slowdown"], "alone, vs the default": r["idle_vs_today"]}
                         for name, r in c["settings"].items()}).T
