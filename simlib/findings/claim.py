"""Finding 2's claim in parts, each with its own statistic and verdict, and where their variance is.

The blog's claim: GRPO makes clear progress against synthetic targets but no meaningful progress on
real data, in training or at test time. Four statistics read it, each a mean over a posts x seeds
matrix of paired changes (:func:`simlib.findings.transfer.changes`), oriented so the claim predicts
``effect > 0`` (the last one predicts ``effect ≈ 0``):

* ``reward`` (primary, the literal comparison): on the probe posts, the synthetic run's gain against
  its own targets minus the real run's gain against its own;
* ``reward:inflation`` (a): within each synthetic-trained run, on held-out posts, its gain against
  synthetic references minus its gain against real ones (same policy, same samples, so how far the
  run moved cancels);
* ``reward:transfer`` (b): on held-out posts, against the same real references, the real-trained
  policy's change minus the synthetic-trained one's (the base score cancels);
* ``reward:real-gain`` (c): the real run's own gain on the probe posts, read against "no meaningful
  improvement": reproduces if two one-sided tests put it within ±margin, contradicts if its 95%
  interval lies above the margin, inconclusive otherwise.

Intervals are t intervals from the crossed post x seed variance components
(:mod:`simlib.measures.power`). The margin is a fixed fraction of the headroom: how much closer real
replies to a post are to each other than the base policy's replies are to them (:func:`margin`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from simlib.findings.transfer import matrix, probe_gains
from simlib.measures import power, verdicts

__all__ = ["KEYS", "RULES", "values", "statistic", "margin", "margin_of_run", "decide", "decide_all", "decomposition",
           "projection", "parts_sentence", "power_sentence"]

KEYS: tuple[str, ...] = ("reward", "reward:inflation", "reward:transfer", "reward:real-gain")

_T = "95% CI: t interval from the crossed post x seed variance components (Satterthwaite df)"
RULES: dict[str, str] = {
    "reward": ("effect = mean over probe posts x seeds of [synthetic run's gain against its own targets - real run's "
               f"gain against its own targets]; {_T}; reproduces if CI > 0, contradicts if CI < margin, else inconclusive"),
    "reward:inflation": ("effect = mean over held-out posts x seeds, within each synthetic-trained run, of [gain against "
                         f"synthetic references - gain against real references]; {_T}; reproduces if CI > 0, "
                         "contradicts if CI < margin, else inconclusive"),
    "reward:transfer": ("effect = mean over held-out posts x seeds, against the same real references, of [real-trained "
                        f"change - synthetic-trained change]; {_T}; reproduces if CI > 0, contradicts if CI < margin, "
                        "else inconclusive"),
    "reward:real-gain": ("effect = mean over probe posts x seeds of the real run's gain against its own targets; "
                         f"{_T}; reproduces (no meaningful improvement) if two one-sided t tests at 5% put it within "
                         "+-margin, contradicts if the 95% CI lies above margin, else inconclusive"),
}


def _wide(sub: pd.DataFrame, column: str) -> pd.DataFrame:
    return sub.pivot_table(index=["post_id", "seed"], columns=column, values="delta", aggfunc="mean")


def values(ch: pd.DataFrame, key: str, a: str = "synthetic", b: str = "real") -> pd.DataFrame:
    """The statistic ``key``'s value per (post_id, seed) cell, as a long table with ``delta``."""
    if key == "reward":
        w = _wide(probe_gains(ch), "trained_on")
        d = w[a] - w[b]
    elif key == "reward:inflation":
        w = _wide(ch[(ch["section"] == "test") & (ch["trained_on"] == a)], "against")
        d = w[a] - w[b]
    elif key == "reward:transfer":
        w = _wide(ch[(ch["section"] == "test") & (ch["against"] == b)], "trained_on")
        d = w[b] - w[a]
    elif key == "reward:real-gain":
        g = probe_gains(ch)
        d = g[g["trained_on"] == b].set_index(["post_id", "seed"])["delta"]
    else:
        raise ValueError(f"unknown statistic {key!r}; expected one of {KEYS}")
    return d.dropna().rename("delta").reset_index()


def statistic(ch: pd.DataFrame, key: str) -> dict:
    """:func:`simlib.measures.power.interval` of the statistic ``key`` (effect, t interval, SE, df, MDE,
    components) and its number of complete (post, seed) cells ``n``."""
    iv = power.interval(matrix(values(ch, key)))
    return {**iv, "n": int(iv["posts"] * iv["seeds"])}


def margin(agreement: float, base: float, fraction: float) -> dict:
    """The margin rule: ``fraction`` of the headroom between the base policy's score against real
    references (``base``) and the real references' score against each other (``agreement``, the same
    BERTScore). A change smaller than that share of the way from the base policy to "as close as
    another real reply" is not a meaningful improvement. When the base policy already scores at or
    above the references' agreement there is no headroom, and the rule gives no margin (NaN)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction!r}")
    head = float(agreement) - float(base)
    return {"agreement": float(agreement), "base": float(base), "headroom": head, "fraction": float(fraction),
            "margin": fraction * head if head > 0 else float("nan")}


def margin_of_run(evals: dict, agreement: dict[str, float], fraction: float, fallback: float,
                  kind: str = "real") -> dict:
    """:func:`margin` on this run: ``agreement`` per held-out post
    (:func:`simlib.steps.reference_agreement`), the base policy's score against the same references
    on the same posts (every seed's base evaluation averaged). Adds ``used``, the margin the verdicts
    take: the rule's, or ``fallback`` when the rule gives none."""
    base = [np.asarray(ev["scores"][kind], dtype=float)[[i for i, p in enumerate(ev["post_id"])
                                                          if p.startswith("test:") and p[5:] in agreement]]
            for (k, _), ev in evals.items() if k == "base"]
    level = float(np.nanmean(np.concatenate(base))) if base else float("nan")
    m = margin(float(np.mean(list(agreement.values()))) if agreement else float("nan"), level, fraction)
    ok = bool(np.isfinite(m["margin"]) and m["margin"] > 0)
    return {**m, "posts": len(agreement), "from_rule": ok, "used": m["margin"] if ok else float(fallback)}


def decide(ch: pd.DataFrame, key: str, margin_f1: float) -> verdicts.Verdict:
    """The verdict of statistic ``key`` by its rule (:data:`RULES`) at ``margin_f1``."""
    s = statistic(ch, key)
    rule = f"{RULES[key]}; margin {margin_f1:.4g} F1"
    if key == "reward:real-gain":
        eq = power.tost(s["effect"], s["se"], s["df"], margin_f1)
        return verdicts.decide_no_gain(s["effect"], s["lo"], s["hi"], equivalent=eq["equivalent"], margin=margin_f1,
                                       n=s["n"], rule=rule, se=s["se"], df=s["df"], mde_value=s["mde"])
    return verdicts.decide(s["effect"], s["lo"], s["hi"], margin=margin_f1, n=s["n"], se=s["se"],
                           mde_value=s["mde"], rule=rule)


def decide_all(ch: pd.DataFrame, margin_f1: float) -> dict[str, verdicts.Verdict]:
    """Every part's verdict, keyed as in ``verdicts.json``."""
    return {k: decide(ch, k, margin_f1) for k in KEYS}


def decomposition(ch: pd.DataFrame) -> pd.DataFrame:
    """Per statistic: its crossed variance components (post, seed, residual), each term's share of the
    variance of the mean at this design, the design, SE, Satterthwaite df and MDE, and the term that
    dominates (``blocking``)."""
    rows = []
    for key in KEYS:
        s = statistic(ch, key)
        c = s["components"]
        terms = {"post": c.post / max(c.posts, 1), "seed": c.seed / max(c.seeds, 1),
                 "residual": c.residual / max(c.posts * c.seeds, 1)}
        total = sum(v for v in terms.values() if np.isfinite(v))
        rows.append({"statistic": key, "post": c.post, "seed": c.seed, "residual": c.residual,
                     **{f"share_{k}": (v / total if total > 0 and np.isfinite(v) else float("nan"))
                        for k, v in terms.items()},
                     "posts": c.posts, "seeds": c.seeds, "se": s["se"], "df": s["df"], "mde": s["mde"],
                     "blocking": max((k for k in terms if np.isfinite(terms[k])), key=terms.get, default="unknown")})
    return pd.DataFrame(rows).set_index("statistic")


def projection(ch: pd.DataFrame, key: str, posts: list[int], seeds: list[int], steps_per_run: int,
               target: float) -> pd.DataFrame:
    """The MDE of statistic ``key`` projected from this run's components to ``posts`` x ``seeds``
    (:func:`simlib.measures.power.project`), the GRPO steps those seeds cost (two runs per seed) and
    whether the MDE reaches ``target``."""
    c = statistic(ch, key)["components"]
    t = power.project(c, posts, seeds)
    t["grpo_steps"] = 2 * t["seeds"] * steps_per_run
    t["reaches_margin"] = t["mde"] <= target
    return t


def parts_sentence(entries: dict[str, dict]) -> str:
    """One sentence, chosen by the recorded verdicts (``verdicts.json`` entries), saying which parts of
    finding 2's claim hold at this scale."""
    names = {"reward": "the larger gain on synthetic targets", "reward:inflation": "reward inflation (a)",
             "reward:transfer": "weaker transfer of synthetic training to real replies (b)",
             "reward:real-gain": "no meaningful gain from real targets (c)"}
    got = {k: entries[k]["verdict"] for k in KEYS if k in entries}
    if not got:
        return "No part of finding 2 was recorded by this run."
    groups = {v: [names[k] for k in KEYS if got.get(k) == v] for v in verdicts.VERDICTS}

    def listing(items: list[str]) -> str:
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]

    parts = []
    if groups["reproduces"]:
        parts.append(f"{listing(groups['reproduces'])} {'holds' if len(groups['reproduces']) == 1 else 'hold'}")
    if groups["contradicts"]:
        parts.append(f"{listing(groups['contradicts'])} {'is' if len(groups['contradicts']) == 1 else 'are'} "
                     "contradicted")
    if groups["inconclusive"]:
        parts.append(f"this run cannot tell for {listing(groups['inconclusive'])}")
    missing = [names[k] for k in KEYS if k not in got]
    if missing:
        parts.append(f"{listing(missing)} {'was' if len(missing) == 1 else 'were'} not recorded")
    return "At this scale, " + "; ".join(parts) + "."


def power_sentence(decomp: pd.DataFrame, proj: pd.DataFrame, margin_f1: float, key: str = "reward") -> str:
    """What limits statistic ``key``'s power and what would reach the margin, chosen by the numbers:
    the dominant variance term, and the smallest projected design (fewest GRPO steps, then posts)
    whose MDE reaches ``margin_f1``, or that none in the table does."""
    r = decomp.loc[key]
    if not np.isfinite(r["mde"]):
        return ("With a single seed (or a single post) the seed-to-seed (or post-to-post) variance is not seen, "
                "so this run gives no interval and no projection for the contrast.")
    head = (f"The contrast's MDE is {r['mde']:.4f} F1 against a margin of {margin_f1:.4f}: "
            f"{'it reaches' if r['mde'] <= margin_f1 else 'it does not reach'} the margin, and its largest "
            f"variance term is the {r['blocking']} term ({r['share_' + r['blocking']]:.0%} of the variance of the mean).")
    if r["mde"] <= margin_f1:
        return head
    ok = proj[proj["reaches_margin"]].sort_values(["grpo_steps", "posts"])
    if ok.empty:
        big = proj.sort_values(["grpo_steps", "posts"]).iloc[-1]
        return (head + f" Even the largest design projected here ({int(big['posts'])} posts x {int(big['seeds'])} "
                f"seeds, {int(big['grpo_steps'])} GRPO steps) would reach an MDE of {big['mde']:.4f} only.")
    best = ok.iloc[0]
    return (head + f" The smallest projected design that reaches it has {int(best['posts'])} posts x "
            f"{int(best['seeds'])} seeds ({int(best['grpo_steps'])} GRPO steps).")
