"""The `seeded` style never shows a reply of the post being answered, nor of any val/test post."""
import pandas as pd
import pytest

from simlib import config, steps
from simlib.generate import make_requests
from simlib.generate.prompts import PERSONAS, persona_kwargs
from simlib.generate.seeding import seeded_kwargs


@pytest.fixture(scope="module")
def real():
    df, _ = steps.real_responses(config.load("ci", {"work_dir": "runs/test-seeding"}))
    return df


def test_no_leakage_from_evaluated_posts(real):
    posts = steps.test_posts(config.load("ci"), real)
    # the wiring the remedy chapter uses (steps.synthetic_responses passes these kwargs)
    reqs = make_requests(posts, ["seeded"], 3, "m", style_kwargs=steps.style_kwargs(config.load("ci"), ["seeded"], real))
    assert len(reqs) == 3 * len(posts)
    texts = real.set_index("response_id")["response_text"]
    for req in reqs:
        prompt = "\n".join(m["content"] for m in req.messages)
        forbidden = real[(real["post_id"] == req.post_id) | (real["split"] != "train")]
        leaked = [t for t in forbidden["response_text"] if len(t) > 30 and t[:200] in prompt]
        assert not leaked, f"post {req.post_id}: a reply of an evaluated post or of itself is in its prompt"
        shown = [t for t in texts if len(t) > 30 and t[:200] in prompt]
        assert shown, "a seeded prompt shows real training replies"


def test_leak_check_can_fail(real):
    # Seeding from the full table (test posts included) must be caught by the same check.
    leaky = real.assign(split="train")
    test_post = real[real["split"] == "test"].iloc[0]
    kw = seeded_kwargs(leaky, k=40)
    ex = kw({"post_id": "other", "subreddit": test_post["subreddit"]}, 0)["examples"]
    evaluated = set(real.loc[real["split"] != "train", "response_text"].str[:200])
    assert any(e[:200] in evaluated or e.removesuffix(" […]")[:150] in " ".join(evaluated) for e in ex)


def test_seeded_examples_are_deterministic_and_vary_by_sample(real):
    kw = seeded_kwargs(real, k=3, seed=1)
    post = {"post_id": "x", "subreddit": real["subreddit"].iloc[0]}
    assert kw(post, 0) == kw(post, 0)
    assert kw(post, 0) != kw(post, 1)


def test_persona_differs_per_sample():
    post = pd.DataFrame([{"post_id": "a", "title": "AITA for x", "body": "b", "subreddit": "AITAH"}])
    reqs = make_requests(post, ["persona"], len(PERSONAS), "m", style_kwargs={"persona": persona_kwargs})
    assert len({r.messages[-1]["content"] for r in reqs}) == len(PERSONAS)
    assert all(p in r.messages[-1]["content"] for p, r in zip(PERSONAS, reqs))
    # what varies comes after the post, so a post's samples share their prompt's beginning
    heads = {r.messages[-1]["content"].split("You are ")[0] for r in reqs}
    assert len(heads) == 1 and "AITA for x" in heads.pop()
