"""Every figure function, drawn on small data shaped like the book's, is legible: no two tick labels,
axis labels, titles or the provenance line overlap, no legend covers a label, count axes have
integer ticks."""
import inspect
import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from simlib.publish import figures  # noqa: E402

SOURCES = ["real", "plain", "humanlike", "persona", "seeded", "own"]
KINDS = ["synthetic", "real", "policy_own"]
VERDICTS = ["NTA", "YTA", "ESH", "NAH", "INFO", "none"]
PROVENANCE = "profile ci · params 1a2b3c4d · data 5e6f7a8b · commit 0123abcd · 2026-12-06 · seeds [0, 1]"


def _rng():
    return np.random.default_rng(0)


def _shares(rows):
    s = pd.DataFrame(_rng().random((len(rows), len(VERDICTS))), index=rows, columns=VERDICTS)
    return s.div(s.sum(axis=1), axis=0)


def _cells(index):
    d = _rng().normal(0, 0.02, len(index))
    return pd.DataFrame({"delta": d, "lo": d - 0.03, "hi": d + 0.03},
                        index=pd.MultiIndex.from_tuples(index, names=["trained_on", "against"]))


def _samples():
    rng = _rng()
    posts = pd.DataFrame({"split": ["train"] * 8 + ["val"] * 2 + ["test"] * 4,
                          "n_responses": rng.integers(10, 41, 14)})
    responses = pd.DataFrame({"response_text": ["x" * int(n) for n in rng.integers(2, 3000, 200)]})
    per_post = pd.DataFrame({"source": np.repeat(SOURCES[:3], 12), "repetition": rng.random(36)})
    scores = pd.DataFrame({"source": np.repeat(SOURCES, 20), "v": rng.normal(-3, 1, 120)})
    wide = pd.DataFrame(rng.normal(-3, 1, (12, 6)), columns=SOURCES)
    curve = pd.DataFrame([{"target": t, "seed": s, "step": k, "reward": rng.random(), "kl": rng.random() / 10}
                          for t in ("synthetic", "real") for s in (0, 1, 2, 3) for k in (1, 2, 3)])
    kl = pd.Series(rng.random(8) / 10, index=pd.MultiIndex.from_tuples(
        [(t, s) for t in ("synthetic", "real") for s in (0, 1, 2, 3)], names=["trained_on", "seed"]))
    front = pd.DataFrame([{"source": s, "cut": c, "repetition": rng.random(), "pass_rate": rng.random()}
                          for s in SOURCES[:3] for c in (0, 25, 50, 75)])
    scored = pd.DataFrame({"source": np.repeat(SOURCES[:3], 20), "relevance": rng.random(60),
                           "fluency": rng.normal(-3, 1, 60), "passes": rng.random(60) > 0.3})
    matrix = pd.DataFrame(rng.normal(-3, 1, (4, 3)), columns=["gemma3-270m", "smollm2-135m", "Qwen/Qwen3-8B"],
                          index=["real", "smollm2-135m plain", "smollm2-135m humanlike", "gemma3-270m samples"])
    controls = pd.DataFrame({"diff": [0.1, 0.2, np.nan, 0.3], "lo": [0.0, 0.1, np.nan, 0.2],
                             "hi": [0.2, 0.3, np.nan, 0.4]},
                            index=pd.MultiIndex.from_tuples([("own", "temperature 1.0"), ("plain", "temperature 0.7"),
                                                             ("plain", "temperature 1.0"), ("humanlike", "length-matched")]))
    return {
        "data_overview": lambda: figures.data_overview(posts, responses),
        "measure_hist": lambda: figures.measure_hist(per_post, "repetition",
                                                     "mean pairwise cosine similarity within a post (passing replies)"),
        "share_bars": lambda: figures.share_bars(_shares(SOURCES), "share of replies"),
        "embedding_map": lambda: figures.embedding_map(rng.normal(size=(30, 2)), list(np.repeat(SOURCES[:3], 10))),
        "violins": lambda: figures.violins(scores, "v", "mean token log-prob, first L tokens", SOURCES),
        "paired_points": lambda: figures.paired_points(wide, "real", SOURCES[1:], "mean log-prob minus real (nats/token)"),
        "heatmap": lambda: figures.heatmap(matrix, "scorer", "replies", cbar_label="mean token log-prob"),
        "reward_curves": lambda: figures.reward_curves(curve),
        "paired_gains": lambda: figures.paired_gains(_cells([(k, k) for k in KINDS]),
                                                     _cells([(t, a) for t in KINDS for a in KINDS])),
        "frontier": lambda: figures.frontier(front),
        "quality_scatter": lambda: figures.quality_scatter(scored),
        "label_panels": lambda: figures.label_panels({"stance": _shares(SOURCES[:3]), "register": _shares(SOURCES[:3])}),
        "run_took_off": lambda: figures.run_took_off(curve, "synthetic", 3, kl),
        "interval_rows": lambda: figures.interval_rows(controls, "minus real replies to the same post (nats/token)"),
    }


SAMPLES = _samples()
# The figure functions: public, defined in the module, returning a figure (not the helpers).
HELPERS = {"apply_style", "colour", "finish", "fit_labels", "integer_ticks", "overlaps", "tick_labels"}
FUNCTIONS = sorted(n for n, f in vars(figures).items() if inspect.isfunction(f) and not n.startswith("_")
                   and f.__module__ == figures.__name__ and n not in HELPERS)


def test_every_figure_function_has_sample_data():
    missing = sorted(set(FUNCTIONS) - set(SAMPLES))
    assert not missing, f"add sample data to tests/test_figures.py for {missing}"


def _drawn_ticks(ax, axis):
    """Tick labels inside the view (the axis keeps Text objects for ticks it does not draw)."""
    a = getattr(ax, f"{axis}axis")
    if not a.get_visible():  # e.g. the shared x axis of a twinx axes, which matplotlib does not draw
        return []
    lo, hi = sorted(a.get_view_interval())
    return [t for locs, labels in ((a.get_majorticklocs(), a.get_majorticklabels()),
                                   (a.get_minorticklocs(), a.get_minorticklabels()))
            for loc, t in zip(locs, labels) if lo - 1e-9 * (hi - lo) <= loc <= hi + 1e-9 * (hi - lo)]


def _texts(fig):
    """(name, text artist) of every label a reader must be able to read."""
    out = []
    for i, ax in enumerate(fig.axes):
        for axis in ("x", "y"):
            out += [(f"ax{i} {axis}tick {t.get_text()!r}", t) for t in _drawn_ticks(ax, axis)]
        out += [(f"ax{i} xlabel", ax.xaxis.label), (f"ax{i} ylabel", ax.yaxis.label), (f"ax{i} title", ax.title)]
    out += [(f"figure text {t.get_text()[:20]!r}", t) for t in fig.texts]
    return [(n, t) for n, t in out if t.get_visible() and t.get_text().strip()]


def collisions(fig) -> list[str]:
    """Pairs of labels whose boxes overlap, and legends that cover a label."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    boxes = [(n, t.get_window_extent(r)) for n, t in _texts(fig)]
    bad = [f"{a} / {b}" for (a, ba), (b, bb) in itertools.combinations(boxes, 2)
           if ba.overlaps(bb) and ba.intersection(ba, bb).width > 1 and ba.intersection(ba, bb).height > 1]
    legends = [lg for ax in fig.axes for lg in [ax.get_legend()] if lg] + list(fig.legends)
    for lg in legends:
        lb = lg.get_window_extent(r)
        bad += [f"legend / {n}" for n, b in boxes if lb.overlaps(b) and lb.intersection(lb, b).width > 1
                and lb.intersection(lb, b).height > 1]
    return bad


@pytest.mark.parametrize("name", FUNCTIONS)
def test_figure_labels_do_not_overlap(name, tmp_path):
    fig = SAMPLES[name]()
    figures.finish(fig, tmp_path / name, PROVENANCE)
    try:
        assert not collisions(fig), f"{name}: overlapping labels: {collisions(fig)}"
    finally:
        plt.close(fig)


def test_the_check_sees_overlapping_labels():
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.bar(range(3), [1, 2, 3])
    ax.set_xticks(range(3), ["synthetic vs real", "synthetic vs synthetic", "synthetic vs policy_own"])
    assert collisions(fig)
    plt.close(fig)


@pytest.mark.parametrize("name,axis", [("reward_curves", "x"), ("data_overview", "y"), ("measure_hist", "y")])
def test_count_axes_have_integer_ticks(name, axis, tmp_path):
    fig = SAMPLES[name]()
    figures.finish(fig, tmp_path / name, PROVENANCE)
    ticks = getattr(fig.axes[0], f"get_{axis}ticks")()
    lo, hi = getattr(fig.axes[0], f"get_{axis}lim")()
    shown = [t for t in ticks if lo <= t <= hi]
    plt.close(fig)
    assert shown and all(float(t).is_integer() for t in shown), f"{name} {axis} ticks {shown}"


def test_crowded_tick_labels_are_turned_until_they_fit(tmp_path):
    names = [f"a long scorer name {i}" for i in range(8)]
    fig = figures.heatmap(pd.DataFrame(np.ones((2, 8)), columns=names, index=["real", "plain"]), "scorer", "replies",
                          cbar_label="log-prob")
    figures.finish(fig, tmp_path / "crowded", PROVENANCE)
    try:
        assert fig.axes[0].get_xticklabels()[0].get_rotation() > 0
        assert not collisions(fig), collisions(fig)
    finally:
        plt.close(fig)
