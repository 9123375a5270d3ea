"""Platonic convergence: how predictable each source of replies is to a model that wrote none of them.

Tables for the `04_logprob` chapter, from the per-reply scores of :func:`simlib.steps.logprob_scores`
(one row per reply: ``post_id``, ``source``, optionally ``temperature``, ``mean_logprob`` over the
first ``max_response_tokens`` tokens, ``mean_logprob_eq`` over the first L tokens, ``n_tokens``).

Every interval resamples **posts** (the replies to one post share its topic, so they are not
independent): per-post means for differences and ratios, post-cluster resampling of the replies
for standard deviations and regressions. Like is compared with like: at equal length
(:func:`equal_length_mean`, and :func:`length_regression` with post fixed effects) and at equal
sampling temperature (:func:`temperature_table`). :func:`logprob_verdict` decides the finding by the
rule in :data:`RULE`; :func:`scoring_models` chooses which models can score at all (only models
with local weights: an API-only generator is skipped and said so).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from simlib.measures.diversity import bootstrap_ci
from simlib.measures.verdicts import Verdict, decide, two_way_bootstrap

# The smallest difference in mean token log-prob (nats per token) this book would call "synthetic
# replies are more predictable than real ones": 0.2 nats is a 22% higher probability per token
# (e^0.2), a fifth of the gap between the scorer's own samples and real replies in the early probes
# (DESIGN.md). Smaller effects would not explain a reward that rises on one kind of target only.
SESOI = 0.2
VERDICT_TEMPERATURE = 1.0
RULE = ("effect = mean over posts of [mean log-prob of the synthetic replies (all styles sampled at "
        "T = 1.0) minus that of the real replies to the same post], each reply scored on its first L tokens "
        "by a model that wrote neither; 95% CI by bootstrap over posts; reproduces if the CI lies above 0, "
        f"contradicts if it lies below the margin {SESOI} nats/token, inconclusive otherwise")


# --------------------------------------------------------------------------- equal length


def equal_length_mean(token_logprobs: Sequence[float], n: int) -> tuple[float, int]:
    """Mean log-prob of a reply's first ``n`` tokens and how many there were (NaN, 0 if none).

    >>> equal_length_mean([-1.0, -2.0, -3.0], 2)
    (-1.5, 2)
    """
    head = list(token_logprobs)[:n]
    return (float(np.mean(head)) if head else float("nan")), len(head)


def equal_tokens(max_tokens: int, max_response_tokens: int, requested: int = 0) -> int:
    """L: the requested count, or (0) the shortest cap a source was cut at: synthetic and own
    replies are sampled up to ``max_tokens``, real ones scored up to ``max_response_tokens``.

    >>> equal_tokens(48, 128), equal_tokens(48, 128, 32)
    (48, 32)
    """
    cap = min(int(max_tokens), int(max_response_tokens))
    if requested and requested > cap:
        raise ValueError(f"L = {requested} exceeds the shortest cap {cap}: sources would differ in length")
    return int(requested) or cap


# --------------------------------------------------------------------------- per source


def source_summary(scores: pd.DataFrame, value: str = "mean_logprob", n_boot: int = 2000, seed: int = 0,
                   by: str = "source") -> pd.DataFrame:
    """Per ``by`` group: replies, posts, mean of per-post means (bootstrap CI over posts), standard
    deviation over replies and 5–95% range."""
    rows = []
    for src, g in scores.groupby(by, sort=False):
        per_post = g.groupby("post_id")[value].mean().to_numpy()
        mean, lo, hi = bootstrap_ci(per_post, np.mean, n_boot=n_boot, seed=seed)
        v = g[value].dropna().to_numpy()
        rows.append({by: src, "replies": len(v), "posts": len(per_post), "mean": mean, "lo": lo, "hi": hi,
                     "sd": float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"),
                     "p05": float(np.quantile(v, 0.05)) if len(v) else float("nan"),
                     "p95": float(np.quantile(v, 0.95)) if len(v) else float("nan")})
    return pd.DataFrame(rows).set_index(by)


def _post_weights(n_posts: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n_posts] counts of each post in each bootstrap resample of the posts."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_posts, size=(n_boot, n_posts))
    w = np.zeros((n_boot, n_posts))
    np.add.at(w, (np.repeat(np.arange(n_boot), n_posts), idx.ravel()), 1.0)
    return w


def _ci(boots: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    b = boots[np.isfinite(boots)]
    if b.size < 2:
        return float("nan"), float("nan")
    lo, hi = np.quantile(b, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def per_post(scores: pd.DataFrame, value: str = "mean_logprob", by: str = "source") -> pd.DataFrame:
    """Posts (rows) × groups (columns): the mean of ``value`` over each post's replies."""
    return scores.pivot_table(index="post_id", columns=by, values=value, aggfunc="mean")


def paired_difference(scores: pd.DataFrame, a: str, b: str, value: str = "mean_logprob", by: str = "source",
                      n_boot: int = 2000, seed: int = 0) -> dict:
    """``a − b`` post by post: the mean over posts with a bootstrap CI over posts, its SE, and a
    post-level Wilcoxon signed-rank p-value (one difference per post, so replies to a post never
    count as independent)."""
    wide = per_post(scores, value, by)
    d = (wide[a] - wide[b]).dropna().to_numpy() if a in wide and b in wide else np.array([])
    if d.size == 0:
        return {"a": a, "b": b, "diff": float("nan"), "lo": float("nan"), "hi": float("nan"),
                "se": float("nan"), "p_post": float("nan"), "posts": 0}
    diff, lo, hi, se = two_way_bootstrap(d, n_boot=n_boot, seed=seed)
    p = float(stats.wilcoxon(d).pvalue) if d.size >= 2 and np.any(d != 0) else float("nan")
    return {"a": a, "b": b, "diff": diff, "lo": lo, "hi": hi, "se": se, "p_post": p, "posts": int(d.size)}


def sd_ratio(scores: pd.DataFrame, a: str, b: str, value: str = "mean_logprob", by: str = "source",
             n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """``sd(a) / sd(b)`` over replies, with a post-cluster bootstrap CI: each resample draws posts
    with replacement and keeps all their replies of both groups (on posts where both have replies).

    The spread of a source mixes differences between posts and between replies to one post;
    resampling posts keeps both.
    """
    s = scores[scores[by].isin([a, b])].dropna(subset=[value])
    posts = sorted(set(s.loc[s[by] == a, "post_id"]) & set(s.loc[s[by] == b, "post_id"]))
    if len(posts) < 2:
        return float("nan"), float("nan"), float("nan")
    s = s[s["post_id"].isin(posts)]
    moments = {}
    for grp in (a, b):
        g = s[s[by] == grp].groupby("post_id")[value]
        moments[grp] = (g.count().reindex(posts).to_numpy(float), g.sum().reindex(posts).to_numpy(float),
                        g.apply(lambda x: float(np.sum(np.square(x)))).reindex(posts).to_numpy(float))

    def sd(w: np.ndarray, grp: str) -> np.ndarray:
        n, s1, s2 = (w @ m for m in moments[grp])
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(np.maximum(s2 - s1 ** 2 / n, 0.0) / (n - 1))

    point = float(sd(np.ones((1, len(posts))), a)[0] / sd(np.ones((1, len(posts))), b)[0])
    w = _post_weights(len(posts), n_boot, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        lo, hi = _ci(sd(w, a) / sd(w, b))
    return point, lo, hi


def predictability_ratio(scores: pd.DataFrame, synthetic: str, real: str = "real", own: str = "own",
                         value: str = "mean_logprob", by: str = "source", n_boot: int = 2000,
                         seed: int = 0) -> tuple[float, float, float]:
    """``(synthetic − real) / (own − real)`` of per-post means, with a bootstrap CI over posts.

    1 means the synthetic replies are as predictable as the scorer's own samples, 0 as
    unpredictable as real ones. The ratio of two means of the same resampled posts (the
    denominator is not averaged post by post: one post with own ≈ real would blow it up).
    """
    wide = per_post(scores, value, by)
    if not {synthetic, real, own} <= set(wide.columns):
        return float("nan"), float("nan"), float("nan")
    wide = wide[[synthetic, real, own]].dropna()
    num = (wide[synthetic] - wide[real]).to_numpy()
    den = (wide[own] - wide[real]).to_numpy()
    if num.size < 2:
        return float("nan"), float("nan"), float("nan")
    point = float(num.sum() / den.sum()) if den.sum() != 0 else float("nan")
    w = _post_weights(num.size, n_boot, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        lo, hi = _ci((w @ num) / (w @ den))
    return point, lo, hi


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """Standardised mean difference (a − b) with the pooled standard deviation (descriptive only:
    it treats replies as independent, so it carries no interval)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else float("nan")


def compare(scores: pd.DataFrame, a: str, b: str = "real", value: str = "mean_logprob", by: str = "source",
            own: str | None = "own", n_boot: int = 2000, seed: int = 0) -> dict:
    """Group ``a`` against ``b`` (the real replies): paired difference (a − b) with its CI and a
    post-level p-value, Cohen's d (descriptive), the spread ratio ``sd(b) / sd(a)`` with a
    post-cluster CI (> 1: ``b`` spreads wider), and, when ``own`` is given, how far ``a`` sits from
    ``b`` towards ``own`` (:func:`predictability_ratio`)."""
    va = scores.loc[scores[by] == a, value].dropna().to_numpy()
    vb = scores.loc[scores[by] == b, value].dropna().to_numpy()
    pd_ = paired_difference(scores, a, b, value, by, n_boot, seed)
    r, rlo, rhi = sd_ratio(scores, b, a, value, by, n_boot, seed)
    out = {"a": a, "b": b, "diff": pd_["diff"], "lo": pd_["lo"], "hi": pd_["hi"], "p_post": pd_["p_post"],
           "posts": pd_["posts"], "cohens_d": cohens_d(va, vb) if len(va) > 1 and len(vb) > 1 else float("nan"),
           "sd_ratio": r, "sd_ratio_lo": rlo, "sd_ratio_hi": rhi}
    if own is not None:
        if a == own:
            out.update(toward_own=1.0, toward_own_lo=float("nan"), toward_own_hi=float("nan"))
        else:
            t, tlo, thi = predictability_ratio(scores, a, b, own, value, by, n_boot, seed)
            out.update(toward_own=t, toward_own_lo=tlo, toward_own_hi=thi)
    return out


# --------------------------------------------------------------------------- length


def length_regression(scores: pd.DataFrame, value: str = "mean_logprob", length: str = "n_tokens",
                      reference: str = "real", by: str = "source", n_boot: int = 2000,
                      seed: int = 0) -> pd.DataFrame:
    """Mean log-prob on log2(length) and source indicators, with post fixed effects.

    Every variable is demeaned within its post (the within estimator), then solved by least
    squares: the source coefficients are each source's difference from ``reference`` at equal
    length on the same post, and ``log2 length`` the change per doubling of a reply's length.
    CIs resample posts (a resampled post brings all its replies); rows: the terms, columns
    ``coef, lo, hi``.
    """
    s = scores.dropna(subset=[value])
    s = s[s[length] > 0]
    groups = [g for g in s[by].unique() if g != reference]
    names = [*groups, "log2 length"]
    X = np.column_stack([(s[by] == g).to_numpy(float) for g in groups] + [np.log2(s[length].to_numpy(float))])
    y = s[value].to_numpy(float)
    post = s["post_id"].to_numpy()
    Xd = X - pd.DataFrame(X).groupby(post).transform("mean").to_numpy()
    yd = y - pd.Series(y).groupby(post).transform("mean").to_numpy()
    beta = np.linalg.lstsq(Xd, yd, rcond=None)[0]
    # per-post normal equations, so a resample is a weighted sum of them
    codes, uniq = pd.factorize(post)
    k = Xd.shape[1]
    xtx = np.zeros((len(uniq), k, k))
    xty = np.zeros((len(uniq), k))
    np.add.at(xtx, codes, Xd[:, :, None] * Xd[:, None, :])
    np.add.at(xty, codes, Xd * yd[:, None])
    w = _post_weights(len(uniq), n_boot, seed)
    A = np.einsum("bp,pij->bij", w, xtx)
    c = np.einsum("bp,pi->bi", w, xty)
    boots = np.full((n_boot, k), np.nan)
    for i in range(n_boot):
        try:
            boots[i] = np.linalg.solve(A[i], c[i])
        except np.linalg.LinAlgError:  # a resample without one source: that coefficient is undefined
            pass
    rows = [{"term": n, "coef": float(b), **dict(zip(("lo", "hi"), _ci(boots[:, j])))}
            for j, (n, b) in enumerate(zip(names, beta))]
    return pd.DataFrame(rows).set_index("term")


# --------------------------------------------------------------------------- temperature


def arm(source: str, temperature: float | None) -> str:
    """The label of one (source, sampling temperature) arm: ``plain T=1.0``; real replies have none.

    >>> arm("plain", 0.7), arm("real", None)
    ('plain T=0.7', 'real')
    """
    if temperature is None or temperature != temperature:
        return source
    return f"{source} T={float(temperature):g}"


def with_arms(scores: pd.DataFrame) -> pd.DataFrame:
    """``scores`` with an ``arm`` column (:func:`arm` of source and temperature)."""
    t = scores["temperature"] if "temperature" in scores else pd.Series(np.nan, index=scores.index)
    return scores.assign(arm=[arm(s, x) for s, x in zip(scores["source"], t)])


def temperature_table(scores: pd.DataFrame, value: str = "mean_logprob_eq", reference: str = "real",
                      n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per (source, temperature) arm: replies, mean, and the paired difference from the real
    replies to the same posts with its CI over posts."""
    s = with_arms(scores)
    summ = source_summary(s, value, n_boot, seed, by="arm")
    rows = []
    for a, r in summ.iterrows():
        src = s.loc[s["arm"] == a, "source"].iloc[0]
        t = s.loc[s["arm"] == a, "temperature"].iloc[0] if "temperature" in s else np.nan
        d = paired_difference(s, a, reference, value, "arm", n_boot, seed) if a != reference else {}
        rows.append({"arm": a, "source": src, "temperature": t, "replies": int(r["replies"]), "mean": r["mean"],
                     "minus_real": d.get("diff", np.nan), "lo": d.get("lo", np.nan), "hi": d.get("hi", np.nan)})
    return pd.DataFrame(rows).set_index("arm")


def controls_table(scores: pd.DataFrame, sources: Sequence[str], temperature: float, reference: str = "real",
                   n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Each source minus the real replies to the same posts, under each control in turn: as first
    measured (up to ``max_response_tokens``), on the first L tokens, with length as a regressor
    (post fixed effects), and on the first L tokens at temperature 1.0 (where the profile samples
    at another temperature). Rows (source, control); columns diff, lo, hi (95%, over posts)."""
    s = with_arms(scores)
    rows = []
    for src in sources:
        a = arm(src, temperature)
        for label, value in (("as first measured", "mean_logprob"), ("first L tokens", "mean_logprob_eq")):
            d = paired_difference(s, a, reference, value, "arm", n_boot, seed)
            rows.append({"source": src, "control": label, "diff": d["diff"], "lo": d["lo"], "hi": d["hi"]})
    main = s[s["arm"].isin([arm(x, temperature) for x in sources] + [reference])]
    reg = length_regression(main, "mean_logprob", reference=reference, by="source", n_boot=n_boot, seed=seed)
    for src in sources:
        if src in reg.index:
            r = reg.loc[src]
            rows.append({"source": src, "control": "length as regressor", "diff": r["coef"], "lo": r["lo"], "hi": r["hi"]})
    if not np.isclose(temperature, VERDICT_TEMPERATURE):
        for src in sources:
            a = arm(src, VERDICT_TEMPERATURE)
            if a in set(s["arm"]):
                d = paired_difference(s, a, reference, "mean_logprob_eq", "arm", n_boot, seed)
                rows.append({"source": src, "control": f"first L tokens, T={VERDICT_TEMPERATURE:g}",
                             "diff": d["diff"], "lo": d["lo"], "hi": d["hi"]})
    out = pd.DataFrame(rows)
    out = out.iloc[np.argsort(out["source"].map({x: i for i, x in enumerate(sources)}).to_numpy(), kind="stable")]
    return out.set_index(["source", "control"])


# --------------------------------------------------------------------------- verdict


def logprob_verdict(scores: pd.DataFrame, synthetic: Sequence[str], value: str = "mean_logprob_eq",
                    reference: str = "real", temperature: float = VERDICT_TEMPERATURE, n_boot: int = 2000,
                    seed: int = 0, margin: float = SESOI) -> Verdict:
    """The finding's verdict by :data:`RULE`: the synthetic sources' replies sampled at
    ``temperature`` (pooled per post) against the real ones, paired by post."""
    t = scores["temperature"] if "temperature" in scores else pd.Series(np.nan, index=scores.index)
    syn = scores["source"].isin(list(synthetic)) & np.isclose(t.astype(float), temperature)
    pooled = pd.concat([scores[syn].assign(_g="synthetic"), scores[scores["source"] == reference].assign(_g="real")])
    d = paired_difference(pooled, "synthetic", "real", value, "_g", n_boot, seed)
    return decide(d["diff"], d["lo"], d["hi"], margin=margin, n=d["posts"], rule=RULE, se=d["se"])


# --------------------------------------------------------------------------- alignment


def alignment_summary(long: pd.DataFrame, reference: str = "real") -> pd.DataFrame:
    """Per source, from :func:`simlib.measures.alignment.equal_n_alignment`'s table: mean mutual k-NN over
    model pairs and repeats, its 2.5–97.5% range over repeats, the chance level k/(n−1), and the
    difference from ``reference`` in the same repeats (same posts) with its range."""
    per = long.groupby(["repeat", "source"])["value"].mean().unstack("source")
    n = int(round(long["n"].mean()))
    chance = float((long["k"] / (long["n"] - 1)).mean())
    rows = []
    for src in per.columns:
        lo, hi = _ci(per[src].to_numpy())
        d = (per[src] - per[reference]).to_numpy() if reference in per else np.full(len(per), np.nan)
        dlo, dhi = _ci(d) if src != reference else (float("nan"), float("nan"))
        rows.append({"source": src, "n": n, "mutual_knn": float(per[src].mean()), "lo": lo, "hi": hi,
                     "chance": chance, "minus_real": float(np.mean(d)) if src != reference else float("nan"),
                     "diff_lo": dlo, "diff_hi": dhi})
    return pd.DataFrame(rows).set_index("source")


# --------------------------------------------------------------------------- which models score


API_PREFIXES = ("gpt-", "o1", "o3", "o4", "chatgpt-", "claude-", "gemini-")


def has_local_weights(name: str) -> bool:
    """Whether ``name`` can be loaded here with transformers: a shipped model, a local folder, or a
    hub id whose config is already in the local Hugging Face cache (nothing is downloaded)."""
    from simlib.lm.weights import is_local

    if is_local(name) or Path(name).expanduser().exists():
        return True
    if name.startswith(API_PREFIXES) or "/" not in name:
        return False
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # noqa: BLE001 - no hub library or a malformed id: not loadable
        return False


def scoring_models(cfg, present: Callable[[str], bool] = has_local_weights) -> tuple[list[str], dict[str, str]]:
    """The causal LMs of this run that can score (and embed) replies, and the skipped ones with why.

    Candidates are the run's causal-LM roles in order: the scorer, the generator, the policy, the
    judge. Only models with local weights score: a generator served through an API (e.g.
    ``gpt-4o-mini``) exposes no log-probs of arbitrary text here. The scorer is always kept (the
    chapter needs it; loading it fails loudly if its weights are missing).
    """
    keep: list[str] = []
    skipped: dict[str, str] = {}
    roles = [("scorer", cfg.scorer), ("generator", cfg.generator), ("policy", cfg.policy), ("judge", cfg.judge)]
    for role, name in roles:
        if name in keep or name in skipped:
            continue
        if role == "scorer" or present(name):
            keep.append(name)
        else:
            why = ("served through an API only" if name.startswith(API_PREFIXES)
                   else "its weights are not on this machine")
            skipped[name] = f"{role}: {why}"
    return keep, skipped


def features_by_source(texts: pd.DataFrame, feats: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """Split features computed once over ``texts`` (rows: post_id, source) by source:
    ``({source: {model: rows}}, {source: post ids})``, the input of
    :func:`simlib.measures.alignment.equal_n_alignment`."""
    out, posts = {}, {}
    for src in texts["source"].unique():
        m = (texts["source"] == src).to_numpy()
        out[src] = {name: f[m] for name, f in feats.items()}
        posts[src] = texts.loc[m, "post_id"].to_numpy()
    return out, posts


def matrix(scores: pd.DataFrame, value: str = "mean_logprob") -> pd.DataFrame:
    """Mean log-prob with one row per source (generator or real) and one column per scorer."""
    return scores.pivot_table(index="source", columns="scorer", values=value, aggfunc="mean")
