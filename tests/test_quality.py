"""The quality gate (simlib.measures.quality) and quality-adjusted diversity (simlib.findings.gap): constructed sets
with known answers, no models."""
from __future__ import annotations

import doctest

import numpy as np
import pandas as pd
import pytest

from simlib.findings import gap
from simlib.measures import quality
from simlib.measures.quality import apply_gate, calibrate, pass_rates


def _frame(rng, n, source, rel=(0.5, 0.1), flu=(-3.5, 0.5)):
    return pd.DataFrame({"source": source, "relevance": rng.normal(*rel, n), "fluency": rng.normal(*flu, n)})


def test_doctests():
    assert doctest.testmod(quality).failed == 0


@pytest.mark.parametrize("keep", [0.95, 0.9, 0.8, 1.0])
def test_gate_keeps_real_replies_at_the_stated_rate(keep):
    real = _frame(np.random.default_rng(0), 400, "real")
    gated = apply_gate(real, calibrate(real, keep=keep))
    assert keep <= gated["passes"].mean() <= keep + 2 / len(real)


def test_same_distribution_passes_at_the_same_rate_and_noise_fails():
    rng = np.random.default_rng(1)
    real = _frame(rng, 2000, "real")
    like = _frame(rng, 2000, "like")  # replies that read like real ones
    noise = _frame(rng, 200, "noise", rel=(0.05, 0.05))  # fluent but unrelated to their post
    gate = calibrate(real)
    rates = pass_rates(apply_gate(pd.concat([real, like, noise], ignore_index=True), gate))
    assert abs(rates.loc["like", "pass_rate"] - 0.95) < 0.03
    assert rates.loc["noise", "pass_rate"] < 0.05


def test_a_reply_must_pass_on_every_component():
    real = _frame(np.random.default_rng(2), 300, "real")
    gate = calibrate(real)
    probe = pd.DataFrame({"relevance": [10.0, -10.0, 10.0], "fluency": [-99.0, 0.0, np.nan]})
    assert not apply_gate(probe, gate)["passes"].any()  # one bad (or missing) component is enough


def test_calibrate_rejects_bad_input():
    with pytest.raises(ValueError):
        calibrate(pd.DataFrame({"relevance": [0.1], "fluency": [-1.0]}), keep=0)
    with pytest.raises(ValueError, match="fluency"):
        calibrate(pd.DataFrame({"relevance": [0.1], "fluency": [np.nan]}))


def _world(seed=0, n_posts=12, n=6, synth_spread=0.25, real_spread=0.9, noise_share=0.5, jitter=0.3):
    """Embeddings in d=64: each post has a topic direction; real replies spread widely around it,
    synthetic ones are near-copies of one another, and a share of synthetic replies is off-topic
    noise (random directions, which look maximally diverse)."""
    rng = np.random.default_rng(seed)
    d, rows, emb, post_emb = 64, [], [], {}
    for p in range(n_posts):
        topic = rng.normal(size=d)
        topic /= np.linalg.norm(topic)
        post_emb[f"p{p}"] = topic
        centre = topic + jitter * rng.normal(size=d) / np.sqrt(d)
        for src in ("real", "plain", "humanlike"):
            for i in range(n):
                if src == "real":
                    e = topic + real_spread * rng.normal(size=d) / np.sqrt(d)
                elif i < round(noise_share * n):
                    e = rng.normal(size=d)  # off-topic noise
                else:
                    e = centre + synth_spread * rng.normal(size=d) / np.sqrt(d)
                rows.append({"post_id": f"p{p}", "source": src, "text": f"{src} {p} {i}"})
                emb.append(e)
    df, emb = pd.DataFrame(rows), np.asarray(emb)
    post = pd.DataFrame(np.vstack(list(post_emb.values())), index=list(post_emb))
    return gap.with_quality(df, emb, post, np.full(len(df), -3.0)), emb


def test_noise_does_not_read_as_breadth():
    scored, emb = _world()
    from simlib.measures.diversity import per_post_diversity

    raw = gap.gap_effect(per_post_diversity(scored, emb))
    gated, _ = gap.gate_responses(scored)
    assert gated.loc[gated["source"] != "real", "passes"].mean() < 0.6  # the noise is dropped
    kept = gap.gap_effect(gap.passing_diversity(gated, emb))
    assert raw.mean() < 0.05  # counting noise, synthetic sets look about as broad as real ones
    assert kept.mean() > 0.2  # among replies that make sense, they are narrower
    v = gap.gap_verdict(gap.passing_diversity(gated, emb), n_boot=500)
    assert v.verdict == "reproduces" and v.n == 12 and v.ci[0] > 0


def test_gap_verdict_contradicts_when_there_is_no_gap():
    scored, emb = _world(synth_spread=0.9, noise_share=0.0, n_posts=40, jitter=0.0)
    gated, _ = gap.gate_responses(scored)
    v = gap.gap_verdict(gap.passing_diversity(gated, emb), n_boot=500)
    assert v.verdict == "contradicts" and v.ci[1] < gap.GAP_MARGIN
    assert v.rule == gap.GAP_RULE


def test_frontier_table_starts_ungated_and_tightens():
    scored, emb = _world()
    front = gap.frontier_table(scored, emb, cuts=(0, 5, 50))
    real = front[front["source"] == "real"].set_index("cut")["pass_rate"]
    assert real[0] == 1.0 and real[5] >= 0.95 and 0.5 <= real[50] < 0.6
    plain = front[front["source"] == "plain"].set_index("cut")
    assert plain.loc[0, "repetition"] < plain.loc[5, "repetition"]  # dropping noise reveals the narrowness
