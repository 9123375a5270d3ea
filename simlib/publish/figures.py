"""One figure style for the whole book: colour-blind-safe palette, labelled axes, PNG + SVG.

Figures plot tables computed elsewhere; functions here only draw. Each saved figure carries a
provenance line (profile, parameter hash, data hash, commit, date, seeds) under its axes.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

# Okabe & Ito (2008), safe for the common colour-vision deficiencies.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
SOURCE_COLOURS = {"real": "#000000", "plain": "#0072B2", "humanlike": "#E69F00",
                  "persona": "#009E73", "seeded": "#CC79A7", "own": "#D55E00"}

STYLE = {
    "figure.figsize": (7.0, 3.8),
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "font.size": 10,
    "axes.titlesize": 11,
    "legend.frameon": False,
    "svg.hashsalt": "simlib",  # stable SVG ids, so unchanged figures give unchanged files
}


def apply_style() -> None:
    plt.rcParams.update(STYLE)


def colour(source: str) -> str:
    # crc32, not hash(): str hashes change per process, and figures must not
    return SOURCE_COLOURS.get(source, PALETTE[zlib.crc32(source.encode()) % len(PALETTE)])


def integer_ticks(ax, axis: str = "y") -> None:
    """Ticks at whole numbers only, for axes that count (posts, replies, GRPO steps)."""
    getattr(ax, f"{axis}axis").set_major_locator(MaxNLocator(integer=True))


def tick_labels(ax, axis: str = "x") -> list:
    """The tick labels of ``ax``'s ``axis`` that are drawn: major and minor, inside the view."""
    a = getattr(ax, f"{axis}axis")
    lo, hi = sorted(a.get_view_interval())
    pad = (hi - lo) * 1e-9
    return [t for locs, labels in ((a.get_majorticklocs(), a.get_majorticklabels()),
                                   (a.get_minorticklocs(), a.get_minorticklabels()))
            for loc, t in zip(locs, labels) if lo - pad <= loc <= hi + pad]


def overlaps(texts, renderer) -> bool:
    """Whether any two of the visible, non-empty ``texts`` overlap on the canvas."""
    boxes = [t.get_window_extent(renderer) for t in texts if t.get_visible() and t.get_text().strip()]
    return any(a.x0 < b.x1 - 1 and b.x0 < a.x1 - 1 and a.y0 < b.y1 - 1 and b.y0 < a.y1 - 1
               for i, a in enumerate(boxes) for b in boxes[i + 1:])


def fit_labels(fig, rect=(0, 0.04, 1, 1)) -> None:
    """Lay the figure out; where an axis's x tick labels still collide, turn them (45°, then 90°)."""
    fig.tight_layout(rect=rect)
    for angle in (45, 90):
        fig.canvas.draw()
        crowded = [ax for ax in fig.axes if overlaps(tick_labels(ax), fig.canvas.get_renderer())]
        if not crowded:
            return
        for ax in crowded:
            for t in ax.get_xticklabels():
                t.set(rotation=angle, ha="right" if angle < 90 else "center",
                  rotation_mode="anchor" if angle < 90 else "default")
        fig.tight_layout(rect=rect)


def finish(fig, path: str | Path, provenance: str) -> Path:
    """Stamp the provenance line, lay out legibly, save PNG and SVG beside each other, return the PNG path."""
    for ax in fig.axes:
        if ax.get_visible() and ax.has_data():
            assert ax.get_xlabel() or ax.get_ylabel(), "every figure axis needs a label"
    fig.text(0.01, 0.005, provenance, fontsize=6.5, color="#555555", ha="left", va="bottom")
    fit_labels(fig)
    path = Path(path).with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    fig.savefig(path.with_suffix(".svg"), metadata={"Date": None})
    return path


apply_style()


def data_overview(posts, responses):
    """Two panels: responses kept per post, and response length (characters, log scale)."""

    fig, (a, b) = plt.subplots(1, 2, figsize=(8.0, 3.4))
    splits = [s for s in ("train", "val", "test") if (posts["split"] == s).any()]
    a.hist([posts.loc[posts["split"] == s, "n_responses"] for s in splits],
           bins=np.arange(0, posts["n_responses"].max() + 5, 5), stacked=True,
           color=PALETTE[:len(splits)],
           label=[f"{s} ({(posts['split'] == s).sum()} posts)" for s in splits])
    a.set_xlabel("responses kept per post")
    a.set_ylabel("posts")
    a.legend()
    integer_ticks(a, "x")
    integer_ticks(a, "y")
    integer_ticks(b, "y")
    lengths = responses["response_text"].str.len().clip(lower=1)
    b.hist(lengths, bins=np.logspace(0, np.log10(lengths.max() + 1), 30), color=PALETTE[0])
    b.set_xscale("log")
    b.set_xlabel("response length (characters)")
    b.set_ylabel("responses")
    return fig


def measure_hist(per_post, measure: str, xlabel: str, sources=("real", "plain", "humanlike")):
    """Per-post distribution of one diversity measure, one step histogram per source."""

    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    vals = per_post[measure].dropna()
    bins = np.linspace(vals.min(), vals.max(), 21) if len(vals) else 10
    for src in sources:
        v = per_post.loc[per_post["source"] == src, measure].dropna()
        if len(v):
            ax.hist(v, bins=bins, histtype="step", linewidth=2, color=colour(src),
                    label=f"{src} (mean {v.mean():.2f})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("posts")
    integer_ticks(ax, "y")
    ax.legend()
    return fig


def _stacked(ax, shares, xlabel: str) -> None:
    """One horizontal stacked bar per row of ``shares`` (rows: sources, columns: category shares)."""
    left = np.zeros(len(shares))
    for i, cat in enumerate(shares.columns):
        ax.barh(list(shares.index), shares[cat].to_numpy(), left=left, label=str(cat),
                color=PALETTE[i % len(PALETTE)], edgecolor="white")
        left += shares[cat].to_numpy()
    ax.set_xlim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("source")
    ax.invert_yaxis()


def share_bars(shares, xlabel: str):
    """Horizontal stacked bars: one bar per source, segments are category shares."""
    fig, ax = plt.subplots(figsize=(7.0, 0.6 * len(shares) + 1.6))
    _stacked(ax, shares, xlabel)
    # beside the bars, where the layout makes room for it whatever the number of rows
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return fig


def embedding_map(coords, sources):
    """Scatter of 2-D coordinates, coloured by source."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for src in dict.fromkeys(sources):
        mask = np.asarray([s == src for s in sources])
        ax.scatter(coords[mask, 0], coords[mask, 1], s=36, color=colour(src), label=src,
                   alpha=0.85, edgecolor="white", linewidth=0.5)
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.legend()
    return fig


def violins(scores, value: str, ylabel: str, order):
    """One violin per source (with its median marked), in ``order``."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    data = [scores.loc[scores["source"] == s, value].dropna().to_numpy() for s in order]
    parts = ax.violinplot(data, showmedians=True, showextrema=False)
    for body, src in zip(parts["bodies"], order):
        body.set_facecolor(colour(src))
        body.set_edgecolor("black")
        body.set_alpha(0.75)
    parts["cmedians"].set_color("black")
    ax.set_xticks(range(1, len(order) + 1), [f"{s}\n(n={len(d)})" for s, d in zip(order, data)])
    ax.set_xlabel("source of the replies")
    ax.set_ylabel(ylabel)
    return fig


def paired_points(wide, reference: str, others, ylabel: str):
    """Per-post mean of each source minus the reference source, one strip of points per source."""
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    for i, src in enumerate(others, start=1):
        d = (wide[src] - wide[reference]).dropna().to_numpy()
        jitter = (np.random.default_rng(i).random(len(d)) - 0.5) * 0.25
        ax.scatter(np.full(len(d), i) + jitter, d, s=18, color=colour(src), alpha=0.8)
        ax.hlines(d.mean(), i - 0.3, i + 0.3, color="black", linewidth=2)
    ax.axhline(0, color="#777777", linewidth=1, linestyle="--")
    ax.set_xticks(range(1, len(others) + 1), list(others))
    ax.set_xlabel("source")
    ax.set_ylabel(ylabel)
    return fig


def heatmap(table, xlabel: str, ylabel: str, fmt: str = "{:.2f}", cbar_label: str = ""):
    """Annotated heatmap of a small table (rows × columns)."""
    fig, ax = plt.subplots(figsize=(1.6 * table.shape[1] + 2.4, 0.55 * table.shape[0] + 1.6))
    im = ax.imshow(table.to_numpy(dtype=float), cmap="cividis", aspect="auto")
    ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns])
    ax.set_yticks(range(table.shape[0]), [str(r) for r in table.index])
    for (i, j), v in np.ndenumerate(table.to_numpy(dtype=float)):
        ax.text(j, i, fmt.format(v), ha="center", va="center",
                color="white" if v < np.nanmean(table.to_numpy(dtype=float)) else "black", fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(False)
    fig.colorbar(im, ax=ax, label=cbar_label)
    return fig


def reward_curves(curve):
    """Training reward per step: thin lines per seed, thick mean with a min–max band, per target."""
    fig, ax = plt.subplots(figsize=(6.8, 3.6))
    for target, g in curve.groupby("target"):
        c = colour({"synthetic": "plain"}.get(target, target))  # the pair's synthetic targets: plain's colour
        for _, s in g.groupby("seed"):
            ax.plot(s["step"], s["reward"], color=c, alpha=0.3, linewidth=1)
        agg = g.groupby("step")["reward"].agg(["mean", "min", "max"])
        ax.fill_between(agg.index, agg["min"], agg["max"], color=c, alpha=0.15)
        ax.plot(agg.index, agg["mean"], color=c, linewidth=2.5, label=f"{target} targets")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean BERTScore reward")
    integer_ticks(ax, "x")
    ax.legend()
    return fig


def paired_gains(probe, test):
    """Left: each kind of run's training-reward gain on the probe posts; right: held-out changes
    against each kind of reference. Bars are means over posts and seeds with their 95% intervals
    (``probe``/``test``: :func:`simlib.findings.transfer.cells` tables). Horizontal bars: the labels
    ("synthetic vs policy_own") are read along the row, whatever their number."""
    rows = max(len(probe), len(test))
    fig, axes = plt.subplots(1, 2, figsize=(8.2, 0.42 * rows + 1.8), sharey=False)
    for ax, table, title in ((axes[0], probe, "training reward (probe posts)"),
                             (axes[1], test, "held-out posts")):
        labels = [f"{t} vs {a}" if title.startswith("held") else t for t, a in table.index]
        y = np.arange(len(table))[::-1]
        colours = [colour({"synthetic": "plain"}.get(t, t)) for t, _ in table.index]
        ax.barh(y, table["delta"], color=colours, alpha=0.6)
        err = np.nan_to_num([table["delta"] - table["lo"], table["hi"] - table["delta"]])  # no interval: no bar
        ax.errorbar(table["delta"], y, xerr=err, fmt="none", ecolor="black", capsize=3)
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("change in BERTScore F1\n(trained - base)")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.grid(axis="y", alpha=0)
    return fig


def frontier(table, sources=("real", "plain", "humanlike")):
    """Diversity against quality: per source, mean pairwise dissimilarity (1 - repetition) of the
    replies that pass each quality threshold (left) and the share that passes it (right)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.0, 3.4))
    for src in [s for s in sources if s in set(table["source"])]:
        t = table[table["source"] == src].sort_values("cut")
        a.plot(t["cut"], 1 - t["repetition"], marker="o", color=colour(src), label=src)
        b.plot(t["cut"], t["pass_rate"], marker="o", color=colour(src), label=src)
    a.set_xlabel("quality threshold (percentile of real replies)")
    a.set_ylabel("1 - mean pairwise cosine (passing)")
    b.set_xlabel("quality threshold (percentile of real replies)")
    b.set_ylabel("share of replies passing")
    b.set_ylim(0, 1.02)
    a.legend()
    return fig


def quality_scatter(scored, sources=("real", "plain", "humanlike")):
    """Every reply's two quality components, coloured by source: relevance to its post against
    fluency under the scorer; hollow markers failed the gate."""
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for src in [s for s in sources if s in set(scored["source"])]:
        d = scored[scored["source"] == src]
        ok = d["passes"].to_numpy(dtype=bool)
        ax.scatter(d["relevance"][ok], d["fluency"][ok], s=16, color=colour(src), alpha=0.75,
                   label=f"{src} (passing)")
        ax.scatter(d["relevance"][~ok], d["fluency"][~ok], s=22, facecolors="none",
                   edgecolors=colour(src), linewidth=1, label=f"{src} (failing)")
    ax.set_xlabel("relevance: cosine between reply and post embeddings")
    ax.set_ylabel("fluency: mean token log-prob")
    ax.legend(fontsize=7, ncol=2)
    return fig


def label_panels(panels: dict):
    """One stacked-bar panel per ``{title: shares}`` table (rows: sources, columns: label shares)."""
    n_rows = max(len(t) for t in panels.values())
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 0.55 * n_rows + 2.2), squeeze=False)
    for ax, (title, shares) in zip(axes[0], panels.items()):
        _stacked(ax, shares, "share of replies")
        ax.set_title(title)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def interval_rows(table, xlabel: str, reference: float = 0.0):
    """Point estimates with 95% intervals, one row per (group, label) of ``table`` (a two-level
    index; columns ``diff``, ``lo``, ``hi``), coloured by the first level, with a line at ``reference``."""
    labels = [f"{g}: {c}" for g, c in table.index]
    fig, ax = plt.subplots(figsize=(7.0, 0.32 * len(labels) + 1.4))
    y = np.arange(len(labels))[::-1]
    for yi, ((g, _), r) in zip(y, table.iterrows()):
        err = np.nan_to_num([[r["diff"] - r["lo"]], [r["hi"] - r["diff"]]])  # no interval: a bare point
        ax.errorbar(r["diff"], yi, xerr=err, fmt="o",
                    color=colour(str(g)), capsize=3, markersize=5)
    ax.axvline(reference, color="#777777", linewidth=1, linestyle="--")
    ax.set_yticks(y, labels)
    ax.set_xlabel(xlabel)
    ax.grid(axis="y", alpha=0)
    return fig


def run_took_off(curve, kind: str, seed: int, kl):
    """Left: training reward per step of every run of ``kind``, the run of ``seed`` drawn thick;
    right: each run's held-out KL estimate from the base policy (``kl``: a Series indexed by
    (trained_on, seed)), the same run's bar outlined. Logged per-step KL, where the trainer computed
    one, is drawn dashed on a second axis of the left panel."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.4, 3.4), gridspec_kw={"width_ratios": [1.6, 1]})
    c = colour({"synthetic": "plain"}.get(kind, kind))
    for s, g in curve[curve["target"] == kind].groupby("seed"):
        mine = int(s) == int(seed)
        a.plot(g["step"], g["reward"], color=c, alpha=1.0 if mine else 0.3, linewidth=2.5 if mine else 1,
               label=f"seed {s}" if mine else None)
        if mine and g["kl"].notna().any():
            k = a.twinx()
            k.plot(g["step"], g["kl"], color="black", linestyle="--", linewidth=1, label="logged KL")
            k.set_ylabel("logged KL")
    a.set_xlabel("GRPO step")
    a.set_ylabel(f"training reward ({kind} targets)")
    integer_ticks(a, "x")
    a.legend(fontsize=8)
    labels = [f"{t[:5]}\n{s}" for t, s in kl.index]
    bars = b.bar(range(len(kl)), kl.to_numpy(), color=[colour({"synthetic": "plain"}.get(t, t)) for t, _ in kl.index],
                 alpha=0.6)
    for bar, (t, s) in zip(bars, kl.index):
        if t == kind and int(s) == int(seed):
            bar.set_edgecolor("#d62728")
            bar.set_linewidth(2.5)
    b.set_xticks(range(len(kl)), labels, fontsize=7)
    b.set_xlabel("run (targets, seed)")
    b.set_ylabel("KL estimate from base (nats/token)")
    fit_labels(fig)
    return fig
