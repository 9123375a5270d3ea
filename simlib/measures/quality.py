"""Does a reply make sense as a reply to its post? A quality gate calibrated on real replies.

Embedding diversity rewards noise: a reply that drifts off topic, or echoes instruction-tuning
text, lies far from the others and raises every spread measure. Diversity therefore counts only
among replies that pass this gate, so that a small model's noise cannot read as human breadth.

Components (each higher = better; both computed elsewhere and only combined here):

``relevance``  cosine similarity between the reply's and its post's sentence embeddings (the
               encoder's): an off-topic or echoed-instruction reply is far from its post.
``fluency``    mean token log-prob of the reply given its post under the scorer, a model that
               wrote none of the replies (:func:`simlib.steps.logprob_scores`): gibberish and
               broken text score low. It does not catch fluent repetition, which relevance and
               the diversity measures themselves see.

Calibration: each component of a reply is turned into its rank among the *real* replies' values
of that component (the empirical CDF of the reference, between 0 and 1), and the reply's
``quality`` is the smaller of its ranks: a reply must look like a real reply on every component.
The threshold is the ``1 - keep`` quantile of the real replies' own quality, so the gate keeps a
share ``keep`` of real replies (0.95 by default: it cuts the worst 5% of real replies and anything
below them) and applies the same bar to every source.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["COMPONENTS", "relevance", "QualityGate", "calibrate", "apply_gate", "pass_rates"]

COMPONENTS: tuple[str, ...] = ("relevance", "fluency")


def relevance(reply_emb: np.ndarray, post_emb: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity between reply embeddings and their posts' embeddings.

    >>> relevance(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[3.0, 0.0], [1.0, 0.0]])).tolist()
    [1.0, 0.0]
    """
    a = np.asarray(reply_emb, dtype=np.float64)
    b = np.asarray(post_emb, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"reply and post embeddings must align row by row, got {a.shape} and {b.shape}")
    na, nb_ = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dots = np.einsum("ij,ij->i", a, b)
    return np.divide(dots, na * nb_, out=np.zeros(len(a)), where=(na * nb_) > 0)


@dataclass(frozen=True)
class QualityGate:
    """The real replies' reference values per component and the threshold on ``quality``."""

    reference: dict[str, np.ndarray] = field(repr=False)  # sorted real values per component
    threshold: float  # a reply passes when its quality >= threshold
    keep: float  # the share of real replies the threshold was set to keep

    def quality(self, df: pd.DataFrame) -> np.ndarray:
        """Each row's smallest rank among the real replies over the components (NaN -> 0)."""
        ranks = []
        for c, ref in self.reference.items():
            v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64)
            r = np.searchsorted(ref, v, side="right") / len(ref)  # share of real values <= v
            ranks.append(np.where(np.isnan(v), 0.0, r))
        return np.min(np.vstack(ranks), axis=0)


def calibrate(real: pd.DataFrame, keep: float = 0.95, components=COMPONENTS) -> QualityGate:
    """The gate that keeps a share ``keep`` of ``real`` (rows with the ``components`` columns).

    ``keep=1`` keeps every real reply and still drops replies worse than the worst real one on
    some component.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep!r}")
    ref = {}
    for c in components:
        v = pd.to_numeric(real[c], errors="coerce").to_numpy(dtype=np.float64)
        v = np.sort(v[~np.isnan(v)])
        if v.size == 0:
            raise ValueError(f"no real reply has a value for {c!r}: nothing to calibrate on")
        ref[c] = v
    gate = QualityGate(ref, float("-inf"), keep)
    q = gate.quality(real)
    # "lower": the largest threshold that still keeps at least `keep` of the real replies
    threshold = float(np.quantile(q, 1 - keep, method="lower"))
    return QualityGate(ref, threshold, keep)


def apply_gate(df: pd.DataFrame, gate: QualityGate) -> pd.DataFrame:
    """``df`` with ``quality`` (0..1) and ``passes`` (bool) columns."""
    q = gate.quality(df)
    return df.assign(quality=q, passes=q >= gate.threshold)


def pass_rates(gated: pd.DataFrame, by: str = "source") -> pd.DataFrame:
    """Share of replies that pass, and how many were judged, per ``by`` value."""
    g = gated.groupby(by, sort=False)["passes"]
    return pd.DataFrame({"replies": g.size(), "passing": g.sum().astype(int), "pass_rate": g.mean()})
