"""What a profile will cost before it runs: ``simlib plan --profile paper``.

The plan counts what the chapters will ask for under a Config (API requests and tokens, local model
passes, GRPO runs and steps) and multiplies the counts by the table ``simlib/publish/prices.yaml``: API list
prices with the Batch API discount, and stated GPU throughput assumptions (a share of a reference
GPU's bf16 peak; nothing there is measured by this project). It reads no data and loads no model, so
it answers in a second for any profile.

Counts are upper bounds where a length is unknown before the run: every post body is counted at
``max_post_chars`` and every synthetic reply at ``max_tokens``. Post counts follow data selection:
``n_posts`` threads per subreddit, capped by the pinned crawl's registry (before the response filters
drop posts), or ``n_posts`` per subreddit for dumps; ``--posts`` replaces the estimate, and
``--count`` runs the cached data step to count the posts that survive the filters.

:func:`needs_consent` is the rule ``simlib run`` applies: a plan that pays for API tokens (or whose
endpoint has no known price) needs ``--yes`` or ``SIMLIB_ACCEPT_COST=1``.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from simlib.config import REPO_ROOT, Config
from simlib.generate.grouping import requests_per_post
from simlib.generate import prices as price_table
from simlib.generate.prices import PRICES_FILE

CONSENT_ENV = "SIMLIB_ACCEPT_COST"
# the templates of the local models' prompts (simlib.lm.logprob.build_prompt, policy prompts), in characters
_INSTRUCTION_CHARS = 80
_JUDGE_CHARS = 600  # what the judge reads of a reply (simlib.steps.JUDGE_CHARS)
_JUDGE_LABEL_TOKENS = 10 * 4  # ten candidate labels of a few tokens each (simlib.measures.judge.QUESTIONS)
_API_PREFIXES = ("gpt-", "o1", "o3", "o4", "chatgpt-")


def load_table(path: str = str(PRICES_FILE)) -> dict:
    """The price and throughput table (``simlib/publish/prices.yaml``, read by :mod:`simlib.generate.prices`)."""
    return price_table.load_table(path)


# ----------------------------------------------------------------------------------- pieces
@dataclass
class ApiLine:
    """API use of one kind (synthetic generation) through the OpenAI-compatible endpoint."""

    what: str
    model: str
    requests: int
    tokens_in: int
    tokens_out: int
    usd_standard: float | None  # None: no price known for the model
    usd_batch: float | None
    batch: bool  # the Batch API is used (the batch price applies)

    @property
    def usd(self) -> float | None:
        return self.usd_batch if self.batch else self.usd_standard


@dataclass
class GpuLine:
    """Local model passes of one stage, in GPU-hours on the reference GPU."""

    what: str
    model: str
    tokens: int
    gpu_hours: float | None  # None: the model's size is unknown


@dataclass
class Plan:
    profile: str
    posts: int
    splits: dict[str, int]
    posts_note: str
    api: list[ApiLine] = field(default_factory=list)
    gpu: list[GpuLine] = field(default_factory=list)
    memory_gb: dict[str, float] = field(default_factory=dict)
    disk_gb: dict[str, float] = field(default_factory=dict)
    assumptions: list[str] = field(default_factory=list)
    paid_endpoint: bool = False

    @property
    def usd(self) -> float | None:
        """USD the run pays (batch prices where the Batch API is used); None if any price is unknown."""
        vals = [a.usd for a in self.api]
        return None if any(v is None for v in vals) else float(sum(vals))

    @property
    def gpu_hours(self) -> float | None:
        vals = [g.gpu_hours for g in self.gpu]
        return None if any(v is None for v in vals) else float(sum(vals))

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        return {**dataclasses.asdict(self), "usd": self.usd, "gpu_hours": self.gpu_hours,
                "needs_consent": needs_consent(self)}

    def render(self) -> str:
        t = load_table()
        lines = [f"simlib plan: profile {self.profile!r}",
                 f"posts: {self.posts} ({', '.join(f'{k} {v}' for k, v in self.splits.items())}); {self.posts_note}", ""]
        if self.api:
            lines.append(f"API ({t['api']['source']}; Batch API at {t['api']['batch_discount']:.0%} of the standard price)")
            w = max(len(a.what) for a in self.api)
            wm = max(len(a.model) for a in self.api)
            lines.append(f"  {'what':{w}s} {'model':{wm}s} {'requests':>9s} {'tokens in':>12s} {'tokens out':>12s} "
                         f"{'USD std':>9s} {'USD batch':>9s}")
            for a in self.api:
                lines.append(f"  {a.what:{w}s} {a.model:{wm}s} {a.requests:9,d} {a.tokens_in:12,d} {a.tokens_out:12,d} "
                             f"{_usd(a.usd_standard):>9s} {_usd(a.usd_batch):>9s}" + ("  <- batch" if a.batch else ""))
            lines.append(f"  API total: {sum(a.requests for a in self.api):,d} requests, "
                         f"{sum(a.tokens_in for a in self.api):,d} tokens in, "
                         f"{sum(a.tokens_out for a in self.api):,d} tokens out, cost {_usd(self.usd)}"
                         + (" (Batch API prices)" if any(a.batch for a in self.api) else " (standard prices)"))
        else:
            lines.append("API: none (generation runs on the local server; nothing is paid)")
        gp = t["gpu"]
        lines += ["", f"GPU ({gp['name']}, {gp['bf16_tflops']} bf16 TFLOP/s peak; utilisation assumed "
                      f"{gp['forward_utilisation']:.0%} reading, {gp['decode_utilisation']:.0%} sampling, "
                      f"{gp['vllm_decode_utilisation']:.0%} vLLM sampling, {gp['train_utilisation']:.0%} training)"]
        w = max((len(g.what) for g in self.gpu), default=10)
        wm = max((len(g.model) for g in self.gpu), default=10)
        for g in self.gpu:
            lines.append(f"  {g.what:{w}s} {g.model:{wm}s} {g.tokens:14,d} tokens {_hours(g.gpu_hours):>10s} GPU-h")
        lines.append(f"  GPU total: {_hours(self.gpu_hours)} GPU-hours")
        lines += ["", "memory: " + ", ".join(f"{k} {v:.1f} GB" for k, v in self.memory_gb.items()),
                  "disk: " + ", ".join(f"{k} {v:.1f} GB" for k, v in self.disk_gb.items()), "", "assumptions:"]
        lines += [f"  - {a}" for a in self.assumptions]
        lines.append("")
        lines.append("consent: " + (f"this run pays for API use: `simlib run` needs --yes or {CONSENT_ENV}=1"
                                    if needs_consent(self) else "nothing is paid; no consent needed"))
        return "\n".join(lines)


def _read(path: str) -> str:
    p = Path(path) if Path(path).is_absolute() else REPO_ROOT / path
    return p.read_text() if path and p.is_file() else ""


def _usd(x: float | None) -> str:
    return "unknown" if x is None else f"${x:,.2f}"


def _hours(x: float | None) -> str:
    return "unknown" if x is None else (f"{x:,.1f}" if x >= 1 else f"{x:.3f}")


def needs_consent(plan: Plan) -> bool:
    """Whether running the plan pays money: API tokens with a price, or a paid endpoint whose price
    is unknown (counted as paid: an unknown cost is not a free one)."""
    return plan.paid_endpoint and (plan.usd is None or plan.usd > 0)


def consented(flag: bool = False, env: dict | None = None) -> bool:
    """``--yes`` or ``SIMLIB_ACCEPT_COST=1`` (also true/yes)."""
    value = (os.environ if env is None else env).get(CONSENT_ENV, "")
    return bool(flag) or value.strip().lower() in ("1", "true", "yes")


# ----------------------------------------------------------------------------------- sizes
def params_b(model: str) -> float | None:
    """Parameters (billions) of a model: the table's, else read from its name ("8B", "135M")."""
    table = load_table()["params_b"]
    if model in table:
        return float(table[model])
    m = re.search(r"(\d+(?:\.\d+)?)\s*([bBmM])\b", model.replace("-", " ").replace("_", " "))
    if not m:
        return None
    return float(m.group(1)) * (1.0 if m.group(2).lower() == "b" else 1e-3)


def is_api_model(model: str) -> bool:
    return model.startswith(_API_PREFIXES)


def price(model: str) -> dict | None:
    """``{"input", "output"}`` USD per 1M tokens: the table's entry for ``model`` or the longest
    entry it starts with (``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``); None when unknown."""
    return price_table.price(model, load_table())


def is_paid_endpoint(url: str) -> bool:
    """An endpoint that is not this machine (the OpenAI API, a hosted server) may charge."""
    host = (urlparse(url).hostname or "").lower()
    return bool(url) and host not in ("localhost", "127.0.0.1", "::1", "0.0.0.0")


# ----------------------------------------------------------------------------------- posts
def registry_counts() -> dict[str, int]:
    """Threads per subreddit in the pinned crawl's registry (what can be read offline)."""
    counts: dict[str, int] = {}
    for line in (REPO_ROOT / "simlib" / "data" / "crawler_registry.txt").read_text().splitlines():
        m = re.match(r"docs/api/([^/]+)/", line)
        if m:
            counts[m.group(1).lower()] = counts.get(m.group(1).lower(), 0) + 1
    return counts


def estimate_posts(cfg: Config, posts: int | None = None) -> tuple[int, str]:
    """(posts, how they were counted) before the chapters run."""
    if posts is not None:
        return int(posts), "given with --posts"
    subs = [s.lower() for s in cfg.subreddits]
    if cfg.dumps:
        if not cfg.n_posts:
            raise ValueError("the profile reads dumps with n_posts 0 (every thread): their size is not known "
                             "offline; give --posts N or --count")
        return cfg.n_posts * len(subs), (f"n_posts {cfg.n_posts} x {len(subs)} subreddit(s) from the dumps, "
                                         "before the response filters (an upper bound)")
    have = registry_counts()
    per = {s: min(cfg.n_posts, have.get(s, 0)) if cfg.n_posts else have.get(s, 0) for s in subs}
    what = f"n_posts {cfg.n_posts}" if cfg.n_posts else "every thread"
    return sum(per.values()), (f"{what} of the pinned crawl ({', '.join(f'{s} {n}' for s, n in per.items())}), "
                               "before the response filters (an upper bound)")


def count_posts(cfg: Config) -> tuple[int, dict[str, int], str]:
    """Posts after selection and filters, by split, from the cached data step (reads the data)."""
    from simlib import steps
    from simlib.data import posts_table

    df, _ = steps.real_responses(cfg)
    posts = posts_table(df)
    splits = {k: int((posts["split"] == k).sum()) for k in ("train", "val", "test")}
    return len(posts), splits, "counted after selection and filters (simlib.steps.real_responses)"


def split_counts(cfg: Config, n: int) -> dict[str, int]:
    train = int(n * cfg.train_frac)
    val = int(n * cfg.val_frac)
    return {"train": train, "val": val, "test": n - train - val}


# ----------------------------------------------------------------------------------- the plan
def prompt_tokens(cfg: Config, style: str) -> int:
    """Tokens of one generation request in ``style``: the style's own messages around a post of
    ``max_post_chars`` characters (persona and seeded examples at their longest)."""
    from simlib.generate.prompts import PERSONAS, build_messages

    tk = load_table()["tokens"]
    post = {"title": "t" * tk["title_chars"], "body": "word " * (cfg.max_post_chars // 5 + 1), "subreddit": "aitah"}
    kw: dict[str, Any] = {}
    if style == "persona":
        kw["persona"] = max(PERSONAS, key=len)
    elif style == "seeded":
        kw["examples"] = tuple("x" * cfg.seed_example_chars for _ in range(cfg.seed_examples))
    msgs = build_messages(style, post, max_post_chars=cfg.max_post_chars, **kw)
    chars = sum(len(m["content"]) for m in msgs)
    return int(math.ceil(chars / tk["chars_per_token"])) + tk["message_overhead"] * (len(msgs) + 1)


def make(cfg: Config, posts: int | None = None, count: bool = False) -> Plan:
    """The plan of ``cfg``: counts, USD, GPU-hours, memory and disk (see the module docstring)."""
    t = load_table()
    tk, gpu = t["tokens"], t["gpu"]
    cpt = tk["chars_per_token"]
    if count:
        n, splits, note = count_posts(cfg)
    else:
        n, note = estimate_posts(cfg, posts)
        splits = split_counts(cfg, n)
    plan = Plan(cfg.profile, n, splits, note)
    styles = list(dict.fromkeys([*cfg.styles, *cfg.remedy_styles]))
    remedy_only = [s for s in cfg.remedy_styles if s not in cfg.styles]
    g, seeds = cfg.n_per_group, len(cfg.grpo_seeds)

    # --- API: synthetic replies (the chapters' stores share them: each request is sent once) --------
    if cfg.api_base_url:
        plan.paid_endpoint = is_paid_endpoint(cfg.api_base_url)
        # a request with n choices reads (and bills) its prompt once; the Batch API path sends one per sample
        per_post = {s: requests_per_post(s, cfg.n_samples, 1 if cfg.use_batch_api else cfg.concurrency) for s in styles}
        reqs = n * sum(per_post.values())
        t_in = sum(n * k * prompt_tokens(cfg, s) for s, k in per_post.items())
        t_out = n * cfg.n_samples * len(styles) * cfg.max_tokens
        p = price(cfg.generator)
        std = None if p is None else (t_in * p["input"] + t_out * p["output"]) / 1e6
        batch = None if std is None else std * t["api"]["batch_discount"]
        plan.api.append(ApiLine(f"synthetic replies ({', '.join(styles)})", cfg.generator, reqs, t_in, t_out,
                                std, batch, cfg.use_batch_api))
        plan.assumptions.append(f"every synthetic reply is {cfg.max_tokens} tokens (max_tokens; an upper bound) and "
                                f"every post body {cfg.max_post_chars} characters; {cpt} characters a token")
        if p is None:
            plan.assumptions.append(f"no price for {cfg.generator!r} in {PRICES_FILE.name}: its cost is unknown")

    # --- local model passes ---------------------------------------------------------------------
    flops = gpu["bf16_tflops"] * 1e12
    u_fwd, u_dec = gpu["forward_utilisation"], gpu["decode_utilisation"]
    u_vllm = gpu["vllm_decode_utilisation"]

    u_train = gpu["train_utilisation"]
    # a training token costs 6 x params FLOPs forward and backward, 8 x when activations are recomputed
    train_flops = 8 if cfg.gradient_checkpointing else 6

    def hours(model: str, read_tokens: float, decode_tokens: float = 0.0, train_tokens: float = 0.0,
              decode_util: float = u_dec, extra_s: float = 0.0) -> float | None:
        nb = params_b(model)
        if nb is None:
            return None
        p_ = nb * 1e9
        sec = (2 * p_ * read_tokens / (flops * u_fwd) + 2 * p_ * decode_tokens / (flops * decode_util)
               + train_flops * p_ * train_tokens / (flops * u_train) + extra_s)
        return sec / 3600

    def add(what: str, model: str, read: float = 0, decode: float = 0, train: float = 0, util: float = u_dec,
            extra_s: float = 0.0):
        plan.gpu.append(GpuLine(what, model, int(read + decode + train), hours(model, read, decode, train, util, extra_s)))

    post_tok = (tk["title_chars"] + cfg.max_post_chars + _INSTRUCTION_CHARS) / cpt
    synth_tok = min(cfg.max_tokens, cfg.max_response_tokens)
    real_tok = min(tk["real_reply_tokens"], cfg.max_response_tokens)
    local = [m for m in dict.fromkeys([cfg.scorer, cfg.generator]) if not is_api_model(m)]
    # own samples (log-prob chapter): the scorer's replies to every post
    add("own samples (log-prob chapter)", cfg.scorer, read=n * post_tok, decode=n * g * cfg.max_tokens)
    # log-prob scoring: prompts read once per post, then each reply (real, styles, own) by each local scorer
    replies = n * g * (1 + len(styles) + 1)
    for m in local:
        add("log-prob scoring", m, read=n * post_tok + n * g * (real_tok + (len(styles) + 1) * synth_tok))
    # hidden features: real and synthetic texts under each local causal LM and the encoder
    texts_tok = n * g * (real_tok + len(cfg.styles) * synth_tok)
    for m in dict.fromkeys([*local, cfg.encoder]):
        add("hidden features / embeddings", m, read=texts_tok + (n * g * len(remedy_only) * synth_tok if m == cfg.encoder else 0))
    # the judge: each test reply (real and every style) read once with its ten candidate labels
    items = splits["test"] * g * (1 + len(styles))
    judge_tok = (tk["title_chars"] + _JUDGE_CHARS + _INSTRUCTION_CHARS) / cpt + _JUDGE_LABEL_TOKENS
    if not is_api_model(cfg.judge):
        add("judge (label log-probs)", cfg.judge, read=items * judge_tok)
    # GRPO: seeds x (synthetic, real, each remedy style) runs; rollouts decode, the update reads prompt +
    # completion forward and backward (6 x params FLOPs a token)
    runs = seeds * (2 + len(cfg.remedy_styles))
    completions = cfg.prompts_per_step * cfg.num_generations
    pol_tok = (tk["title_chars"] + (cfg.policy_max_post_chars or cfg.max_post_chars) + _INSTRUCTION_CHARS) / cpt
    steps_total = runs * cfg.grpo_steps
    vllm = cfg.vllm_mode != "off"
    add(f"GRPO rollouts ({runs} runs x {cfg.grpo_steps} steps)", cfg.policy,
        read=steps_total * cfg.prompts_per_step * pol_tok,
        decode=steps_total * completions * cfg.max_completion_length, util=u_vllm if vllm else u_dec)
    nproc = cfg.num_processes if cfg.num_processes != "auto" else gpu["gpus_per_node"]
    add("GRPO updates", cfg.policy, train=steps_total * completions * (pol_tok + cfg.max_completion_length),
        extra_s=steps_total * nproc * gpu["grpo_step_overhead_s"])
    # evaluation: the base policy and every trained run sample eval_samples replies per test post
    evals = 1 + runs
    add(f"policy evaluation ({evals} models)", cfg.policy, read=evals * splits["test"] * pol_tok,
        decode=evals * splits["test"] * cfg.eval_samples * cfg.max_completion_length)
    plan.assumptions += [
        f"{replies:,d} replies scored per local scorer: {g} (n_per_group) per post and source "
        f"(real, {len(styles)} style(s), own samples); real replies {real_tok} tokens, synthetic ones {synth_tok}",
        f"GRPO: {runs} runs = {seeds} seed(s) x (synthetic, real, {len(cfg.remedy_styles)} remedy style(s)); "
        f"{completions} completions a step ({cfg.prompts_per_step} prompts x {cfg.num_generations}); "
        f"training FLOPs {train_flops} x params per token (6, or 8 with gradient checkpointing), sampling 2 x "
        f"params per token, plus {gpu['grpo_step_overhead_s']} s per step on each of {nproc} GPU(s); the BERTScore "
        "reward is not counted",
        "GPU-hours are on one reference GPU; n GPUs share them (less their scaling losses); a profile that runs "
        "on a CPU does the same work there, more slowly (measured in the Performance chapter)",
    ]

    # --- memory -----------------------------------------------------------------------------------
    def weights_gb(model: str, dtype: str) -> float:
        nb = params_b(model) or 0.0
        return nb * (2 if dtype in ("bfloat16", "float16") else 4)

    inf_dtype = cfg.inference_dtype if cfg.inference_dtype != "auto" else "bfloat16 (auto, on a GPU)"
    infer = max((weights_gb(m, inf_dtype) for m in dict.fromkeys([*local, cfg.judge, cfg.encoder])
                 if not is_api_model(m)), default=0.0)
    plan.memory_gb["largest inference model"] = infer * (1 + gpu["activation_headroom"])
    pol_dtype = cfg.policy_dtype if cfg.policy_dtype != "auto" else "bfloat16"
    nb_pol = params_b(cfg.policy) or 0.0
    if cfg.use_lora:
        train_gb = weights_gb(cfg.policy, pol_dtype)  # frozen weights; the adapter and its states are small
        how = "LoRA: frozen weights only"
    elif "zero3" in cfg.accelerate_config or "zero_stage: 3" in _read(cfg.accelerate_config):
        train_gb = nb_pol * 16 / nproc  # bf16 weights + grads, fp32 master weights and two AdamW moments, sharded
        how = f"ZeRO-3 over {nproc} GPUs: 16 bytes a parameter, sharded"
    else:
        per = 2 if pol_dtype == "bfloat16" else 4
        train_gb = nb_pol * per * 4  # weights, gradients and two AdamW moments in the weights' dtype
        how = f"weights, gradients and AdamW moments in {pol_dtype}, on every GPU"
    if cfg.beta > 0:
        train_gb += weights_gb(cfg.policy, pol_dtype)
    if vllm and cfg.vllm_mode == "colocate":
        train_gb += gpu["memory_gb"] * cfg.vllm_gpu_memory_utilization
        how += f", plus a colocated vLLM engine ({cfg.vllm_gpu_memory_utilization:.0%} of the GPU)"
    plan.memory_gb["GRPO per GPU (before activations)"] = train_gb
    plan.assumptions.append(f"GRPO memory: {how}; activations are not counted"
                            + (" (gradient checkpointing on)" if cfg.gradient_checkpointing else ""))

    # --- disk -------------------------------------------------------------------------------------
    hub = [m for m in dict.fromkeys([cfg.policy, cfg.scorer, cfg.generator, cfg.judge, cfg.encoder])
           if not is_api_model(m)]
    plan.disk_gb["model weights"] = sum(weights_gb(m, "bfloat16") for m in hub)
    final_gb = 0.05 if cfg.use_lora else weights_gb(cfg.policy, pol_dtype)
    plan.disk_gb[f"GRPO final models ({runs})"] = runs * final_gb
    ckpt = (0.1 if cfg.use_lora else nb_pol * (weights_gb(cfg.policy, pol_dtype) / max(nb_pol, 1e-9) + 12))
    plan.disk_gb["GRPO checkpoints (one run at a time, deleted at its end)"] = 2 * ckpt
    plan.disk_gb["stores (generations, scores, tables)"] = (
        n * cfg.n_samples * len(styles) * (cfg.max_tokens * cpt + 400) + replies * 300 * len(local)) / 1e9
    return plan
