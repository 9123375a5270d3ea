"""GRPO step time on CPU: fp32 vs bf16 autocast, full fine-tuning vs LoRA, prompt read once or per
completion, and the reward's share.

``python -m benchmarks.bench_grpo [--full]`` prints a JSON dict; :func:`run` returns it.

For each of the four settings the same spec trains SmolLM2-135M for a few steps (same seed, prompts
and references) and the median wall time of the steps after the first (warm-up) is reported, with
the time spent in the reward function. Step 1 starts from the same weights and RNG state in every
setting, so its completions and rewards should agree exactly between full and LoRA (LoRA's B matrices
start at zero) and nearly between fp32 and bf16 (bf16 autocast changes logits, so sampled tokens may
differ). The reward part compares the cached :class:`~simlib.measures.reward.BertScoreReward` with calling
``BERTScorer.score`` on every (completion, reference) pair at each step, as an uncached reward would.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from typing import Any

from simlib import config
from simlib.lm import weights  # noqa: F401  (models: offline environment)
from simlib.lm.hardware import cpu_flags

POSTS = {
    "p1": ("AITA for refusing to lend my car to my sister after she crashed the last one?",
           ["NTA. She crashed your last car, you are allowed to protect your property.",
            "YTA a bit, family helps family, but ask her to pay for insurance.",
            "NTA, tell her to take the bus."]),
    "p2": ("My boss yelled at me in front of the team for a mistake that wasn't mine. Should I quit?",
           ["Don't quit yet, talk to HR and document everything.",
            "Quit. Nobody deserves to be humiliated at work.",
            "Ask for a private meeting and explain what actually happened."]),
    "p3": ("AITA for not going to my best friend's wedding because it's on my birthday?",
           ["YTA. It is one day, you can celebrate your birthday another time.",
            "Soft YTA, weddings are once in a lifetime, birthdays every year."]),
    "p4": ("WIBTA if I told my roommate to stop eating my food?",
           ["NTA, label your food and talk to them directly.",
            "Not at all, that's basic respect between roommates."]),
}


def _data(n_prompts: int):
    prompts, refs = [], {}
    for pid, (text, replies) in list(POSTS.items())[:n_prompts]:
        prompts.append({"post_id": pid, "prompt": [
            {"role": "system", "content": "You are a Reddit user. Reply to the post in one or two sentences."},
            {"role": "user", "content": text}]})
        refs[pid] = replies
    return prompts, refs


class _TimedReward:
    """Wraps a reward function; records its wall time and outputs per call."""

    def __init__(self, inner):
        self.inner = inner
        self.__name__ = inner.__name__
        self.seconds: list[float] = []
        self.outputs: list[list[float]] = []
        self.completions: list[list[str]] = []
        self.post_ids: list[list[str]] = []

    def __call__(self, completions, post_id, **kw):
        from simlib.measures.reward import completion_text

        t = time.perf_counter()
        out = self.inner(completions, post_id=post_id, **kw)
        self.seconds.append(time.perf_counter() - t)
        self.outputs.append(list(out))
        self.completions.append([completion_text(c) for c in completions])
        self.post_ids.append(list(post_id))
        return out


def step_timer():
    """A TrainerCallback that records each optimizer step's wall time in ``.seconds``."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds: list[float] = []
            self._t = 0.0

        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.seconds.append(time.perf_counter() - self._t)

    return StepTimer()


def _real_prompts(n_prompts: int, chars: int) -> tuple[list, dict]:
    """The policy's prompts for ``n_prompts`` real AITAH posts (the ``smoke`` profile's), posts cut
    to ``chars`` characters, with their real replies as references: a ``ci`` profile GRPO step."""
    from simlib import steps

    cfg = config.load("smoke", {"policy_max_post_chars": chars, "max_post_chars": max(chars, 5)})
    real, _ = steps.real_responses(cfg)
    posts = steps.test_posts(cfg, real).sort_values("post_id").head(n_prompts)
    prompts = steps.policy_prompts(cfg, posts).to_dict("records")
    refs = {p["post_id"]: real.loc[real["post_id"] == p["post_id"], "response_text"].head(6).tolist() for p in prompts}
    return prompts, refs


def fp32_peak_gflops(threads: int, path: str = "/proc/cpuinfo") -> float | None:
    """The fp32 peak of ``threads`` cores by formula: clock x SIMD lanes x 2 (FMA) x 2 FMA units per
    cycle. Kept for reference only: it overstates CPUs whose AVX-512 units are half-width (Zen 4);
    the share of peak uses :func:`matmul_peak_gflops`.

    8 lanes with AVX2, 16 with AVX-512; the clock is the "cpu MHz" Linux reports (the nominal or
    current one, not a turbo peak), so the share of peak computed from it is an upper bound.
    """
    flags = cpu_flags(path)
    if "avx2" not in flags or "fma" not in flags:
        return None
    try:
        mhz = max(float(line.split(":")[1]) for line in open(path) if line.lower().startswith("cpu mhz"))
    except (OSError, ValueError):
        return None
    lanes = 16 if "avx512f" in flags else 8
    return threads * mhz / 1000 * lanes * 2 * 2


def matmul_peak_gflops(dtype: str, n: int = 512, repeats: int = 15) -> float:
    """The best GFLOP/s of an ``n`` x ``n`` matrix product in ``dtype`` (float32 or bfloat16) with
    torch's current threads: the peak this machine reaches at that dtype, measured rather than derived
    from a per-cycle formula (core width, clocks and bf16 paths differ between CPUs). The best of
    ``repeats`` is kept, since other jobs only ever slow a repeat down (a short product is likelier to
    find the core to itself, hence the moderate ``n``)."""
    import torch

    a, b = (torch.randn(n, n).to(getattr(torch, dtype)) for _ in range(2))
    torch.matmul(a, b)  # warm-up: threads and packed buffers
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def step_gflop(params: int, prompt_tokens: int, completion_tokens: float, share_prompt: bool, n_gen: int) -> float:
    """Matrix-multiply work of one GRPO step, in GFLOP: 2 FLOP per weight and token forward, 4 more
    backward. Rollouts read each prompt once and decode the completions (forward only); the training
    pass runs forward and backward over prompt and completions, the prompt once per group when it is
    shared, once per completion otherwise. Attention scores and the reward encoder are left out (short
    sequences: a few percent), so the share of peak derived from it is a lower bound on the work done."""
    train_prompt = prompt_tokens if share_prompt else prompt_tokens * n_gen
    return (2 * params * (prompt_tokens + completion_tokens) + 6 * params * (train_prompt + completion_tokens)) / 1e9


def _train_setting(bf16: bool, lora: bool, steps: int, n_prompts: int, n_gen: int, max_len: int,
                   refs: dict, prompts: list, share_prompt: bool = True, share_rollouts: bool = True,
                   reuse_prefill: bool = True) -> dict[str, Any]:
    import warnings

    from simlib.lm.chat import render
    from simlib.measures.reward import BertScoreReward
    from simlib.train import TrainSpec, build_trainer
    from simlib.train.spec import grpo_config

    with tempfile.TemporaryDirectory(prefix="bench-grpo-") as tmp:
        spec = TrainSpec(policy="smollm2-135m", steps=steps, num_generations=n_gen, prompts_per_step=n_prompts,
                         max_completion_length=max_len, bf16=bf16, use_lora=lora, output_dir=tmp,
                         seed=0, share_prompt=share_prompt, share_prompt_rollouts=share_rollouts,
                         reuse_prefill=reuse_prefill,
                         extra={"save_strategy": "no"})
        reward = _TimedReward(BertScoreReward(spec.encoder, refs, aggregate=spec.reward_aggregate, device="cpu"))
        timer = step_timer()
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            trainer = build_trainer(spec, prompts, reward, grpo_config(spec, cpu=True), callbacks=[timer])
            setup = time.perf_counter() - t0
            trainer.train()
        hist = [h for h in trainer.state.log_history if "reward" in h]
    measured = timer.seconds[1:] or timer.seconds
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    params = sum(p.numel() for p in trainer.model.parameters())
    tok = trainer.processing_class
    prompt_tokens = sum(len(render(tok, p["prompt"], tokenize=True, return_dict=True)["input_ids"]) for p in prompts)
    lengths = [h.get("completions/mean_length") or 0.0 for h in hist]
    gflop = step_gflop(params, prompt_tokens, statistics.median(lengths) * n_prompts * n_gen, share_prompt, n_gen)
    step_s = statistics.median(measured)
    return {
        "setup_s": round(setup, 2),
        "step_s": [round(s, 3) for s in timer.seconds],
        "median_step_s": round(statistics.median(measured), 3),
        "median_reward_s": round(statistics.median(reward.seconds[1:] or reward.seconds), 4),
        "trainable_params": int(trainable),
        "prompt_tokens_per_step": int(prompt_tokens),
        "gflop_per_step": round(gflop, 1),
        "achieved_gflops": round(gflop / step_s, 2),
        "reward_mean": [round(h["reward"], 5) for h in hist],
        "completion_length": [h.get("completions/mean_length") for h in hist],
        "_step1": {"completions": reward.completions[0], "rewards": reward.outputs[0],
                   "post_ids": reward.post_ids[0]},
    }


def _reward_bench(step1: dict, refs: dict, repeats: int) -> dict[str, Any]:
    """Cached reward vs bert_score on every pair, on the completions of a real step."""
    from simlib.measures.reward import BertScoreReward

    cands, pids = step1["completions"], step1["post_ids"]
    cached = BertScoreReward("minilm-l6", refs)
    scorer = cached.scorer
    cached(cands, post_id=pids)  # first step embeds the references
    t_cached = []
    for _ in range(repeats):
        t = time.perf_counter()
        ours = cached(cands, post_id=pids)
        t_cached.append(time.perf_counter() - t)
    t_direct = []
    for _ in range(repeats):
        t = time.perf_counter()
        direct = [max(float(scorer.score([c], [r])[2][0]) for r in refs[p]) for c, p in zip(cands, pids)]
        t_direct.append(time.perf_counter() - t)
    return {
        "completions_per_step": len(cands),
        "cached_s": round(statistics.median(t_cached), 4),
        "bert_score_per_pair_s": round(statistics.median(t_direct), 4),
        "max_abs_diff_vs_bert_score": float(max(abs(a - b) for a, b in zip(ours, direct))),
    }


def run(quick: bool = True, threads: int | None = None) -> dict[str, Any]:
    """Time GRPO steps in four settings; ``quick``: 2 prompts x 2 generations x 8 tokens, 3 steps.

    ``threads``: torch intra-op threads (default: torch's own choice, one per core). On a machine
    shared with other jobs, 1 thread avoids OpenMP spin-waiting against them.
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    n_prompts, n_gen, max_len, steps = (2, 2, 8, 3) if quick else (4, 4, 32, 6)
    prompts, refs = _data(n_prompts)
    flags = cpu_flags()
    results: dict[str, Any] = {
        "setup": {"policy": "smollm2-135m", "encoder": "minilm-l6", "prompts_per_step": n_prompts,
                  "num_generations": n_gen, "max_completion_length": max_len, "steps": steps,
                  "torch_threads": torch.get_num_threads(), "quick": quick,
                  "cpu_bf16": "avx512_bf16" in flags, "cpu_amx": "amx_bf16" in flags},
    }
    settings = {}
    for name, bf16, lora in (("fp32_full", False, False), ("bf16_full", True, False),
                             ("fp32_lora", False, True), ("bf16_lora", True, True)):
        settings[name] = _train_setting(bf16, lora, steps, n_prompts, n_gen, max_len, refs, prompts)
    step1 = {k: v.pop("_step1") for k, v in settings.items()}
    results["settings"] = settings

    def agree(a: str, b: str) -> dict[str, Any]:
        same = step1[a]["completions"] == step1[b]["completions"]
        diff = max(abs(x - y) for x, y in zip(step1[a]["rewards"], step1[b]["rewards"]))
        return {"same_completions": same, "max_abs_reward_diff": float(diff)}

    results["step1_agreement"] = {"fp32_full_vs_fp32_lora": agree("fp32_full", "fp32_lora"),
                                  "fp32_full_vs_bf16_full": agree("fp32_full", "bf16_full"),
                                  "bf16_full_vs_bf16_lora": agree("bf16_full", "bf16_lora")}
    base = settings["fp32_full"]["median_step_s"]
    results["speedup_vs_fp32_full"] = {k: round(base / v["median_step_s"], 2) for k, v in settings.items()}
    # The ci profile's own step: one long real post, in the profile's precision on this machine (bf16
    # autocast where it is native), read whole (2000 characters) or cut as the profile cuts it
    # (policy_max_post_chars); prompt length is what the short prompts above hide.
    ci = config.load("ci")
    cut, ci_bf16 = ci.policy_max_post_chars, ci.resolved_bf16()
    ci_gen, ci_len = (2, 8) if quick else (ci.num_generations, ci.max_completion_length)
    # The cut post once more with TRL's own training pass (prompt + completion for every completion)
    # instead of simlib's, which reads the prompt once per group (TrainSpec.share_prompt), and once
    # with TRL's rollouts (model.generate, the prompt read once per completion) instead of simlib's
    # (TrainSpec.share_prompt_rollouts).
    # And once with the rollouts' prompt pass not handed to the training pass (TrainSpec.reuse_prefill).
    posts = {}
    for name, chars, share, rollouts, reuse in (
            ("ci_post_2000_chars", 2000, True, True, True), (f"ci_post_{cut}_chars", cut, True, True, True),
            (f"ci_post_{cut}_chars_trl_pass", cut, False, True, True),
            (f"ci_post_{cut}_chars_trl_generate", cut, True, False, True),
            (f"ci_post_{cut}_chars_no_prefill_reuse", cut, True, True, False)):
        p, r = _real_prompts(1, chars)
        posts[name] = _train_setting(ci_bf16, False, 2 if quick else steps, 1, ci_gen, ci_len, r, p, share_prompt=share,
                                     share_rollouts=rollouts, reuse_prefill=reuse)
        posts[name].pop("_step1")
    shared, trl = posts[f"ci_post_{cut}_chars"], posts[f"ci_post_{cut}_chars_trl_pass"]
    results["ci_step"] = {"settings": posts, "bf16": ci_bf16, "num_generations": ci_gen, "max_completion_length": ci_len,
                          "speedup_cut_vs_whole": round(posts["ci_post_2000_chars"]["median_step_s"]
                                                        / shared["median_step_s"], 2),
                          "speedup_shared_prompt": round(trl["median_step_s"] / shared["median_step_s"], 2),
                          "speedup_shared_rollouts": round(posts[f"ci_post_{cut}_chars_trl_generate"]["median_step_s"]
                                                           / shared["median_step_s"], 2),
                          "speedup_prefill_reuse": round(posts[f"ci_post_{cut}_chars_no_prefill_reuse"]["median_step_s"]
                                                         / shared["median_step_s"], 2),
                          "shared_prompt_same_step1_rewards": shared["reward_mean"][:1] == trl["reward_mean"][:1]}
    results["reward"] = _reward_bench(step1["fp32_full"], refs, repeats=3 if quick else 5)
    # how much of the CPU's arithmetic a step uses, against the peak a matrix product reaches here at the
    # dtype the step multiplies in (bf16 under autocast where native); the per-cycle formula is kept for reference
    peaks = {dt: matmul_peak_gflops(dt, repeats=5 if quick else 15) for dt in ("float32", "bfloat16")}
    step_dtype = "bfloat16" if ci_bf16 else "float32"
    formula = fp32_peak_gflops(torch.get_num_threads())
    ci_own = posts[f"ci_post_{cut}_chars"]
    results["flops"] = {"fp32_peak_gflops": round(peaks["float32"], 1), "bf16_peak_gflops": round(peaks["bfloat16"], 1),
                        "peak_dtype": step_dtype, "peak_source": "measured: best n x n matmul",
                        "fp32_formula_gflops": round(formula, 1) if formula else None,
                        "ci_step_gflop": ci_own["gflop_per_step"], "ci_step_gflops": ci_own["achieved_gflops"],
                        "ci_step_share_of_peak": round(ci_own["achieved_gflops"] / peaks[step_dtype], 3)}
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_grpo", description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="larger setting (4 prompts x 4 generations x 32 tokens)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ns = ap.parse_args(argv)
    print(json.dumps(run(quick=not ns.full, threads=ns.threads), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
