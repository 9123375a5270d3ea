"""simlib.lm.sampling: prompts decoded together, each on its own random stream."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from simlib.lm import sampling

V, EOS, PAD = 12, 11, 0


class CountingLM(torch.nn.Module):
    """A fake causal LM: the next token is the last input token + 1 (greedy), so a row reaches EOS
    after a number of steps set by its last prompt token. It records the positions it is fed."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.positions: list[torch.Tensor] = []
        self.generation_config = SimpleNamespace(eos_token_id=[EOS])

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=True, past_key_values=None,
                logits_to_keep=0):
        self.positions.append(position_ids.clone())
        nxt = (input_ids + 1).clamp(max=V - 1)
        logits = torch.nn.functional.one_hot(nxt, V).float() * 10.0
        cache = past_key_values or _Cache(input_ids.shape[0])
        return SimpleNamespace(logits=logits[:, -1:] if logits_to_keep == 1 else logits, past_key_values=cache)


class _Cache:
    def __init__(self, rows):
        self.rows = rows

    def batch_repeat_interleave(self, n):
        self.rows *= n


def test_rows_stop_at_eos_and_positions_count_real_tokens_only():
    lm = CountingLM()
    # prompt 0 ends on 9: writes 10, then EOS; prompt 1 ends on 3: writes 4..10 before EOS
    out = sampling.sample(lm, [[5, 9], [1, 2, 3]], [0, 1], n=2, max_new_tokens=20, temperature=0,
                          eos_token_ids=[EOS], pad_token_id=PAD)
    assert out == [[[10], [10]], [[4, 5, 6, 7, 8, 9, 10]] * 2]
    assert lm.positions[0].tolist() == [[0, 0, 1], [0, 1, 2]]  # the padded prompt starts at 0
    assert [p[:, 0].tolist() for p in lm.positions[1:3]] == [[2, 2, 3, 3], [3, 3, 4, 4]]
    assert len(lm.positions) == 8  # the loop ends once every row has written EOS
    capped = sampling.sample(lm, [[1]], [0], n=1, max_new_tokens=3, temperature=0, eos_token_ids=[EOS])
    assert capped == [[[2, 3, 4]]]
    # GRPO's completions end with their EOS token; a row cut at max_new_tokens has none
    kept = sampling.sample(lm, [[5, 9], [1]], [0, 1], n=1, max_new_tokens=4, temperature=0, eos_token_ids=[EOS],
                           pad_token_id=PAD, keep_eos=True)
    assert kept == [[[10, EOS]], [[2, 3, 4, 5]]]


def test_draw_is_categorical_and_respects_top_p():
    torch.manual_seed(123)
    logits = torch.randn(1, 6).repeat(4, 1)
    logits[:, 5] = -float("inf")  # probability 0: never drawn
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(6)
    for _ in range(2500):
        counts += torch.bincount(sampling._draw(logits, 1.0, 1.0, [gen], 4), minlength=6)
    freq, p = counts / counts.sum(), logits[0].softmax(-1)
    assert counts[5] == 0 and (freq - p).abs().max() < 0.02, (freq, p)
    # top_p: only the smallest set of most likely tokens holding top_p of the mass is drawn
    order = p.argsort(descending=True)
    k = int((p[order].cumsum(0) < 0.6).sum()) + 1
    drawn = set()
    for _ in range(300):
        drawn |= set(sampling._draw(logits, 1.0, 0.6, [gen], 4).tolist())
    assert drawn == set(order[:k].tolist())
    assert sampling._draw(logits, 0.0, 1.0, [gen], 4).tolist() == [int(order[0])] * 4


def test_each_prompt_draws_from_its_own_generator():
    logits = torch.zeros(4, 1000)  # uniform: every draw comes from the row's generator alone
    a = sampling._draw(logits, 1.0, 1.0, [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)], 2)
    b = sampling._draw(logits, 1.0, 1.0, [torch.Generator().manual_seed(2), torch.Generator().manual_seed(1)], 2)
    assert a[:2].tolist() == b[2:].tolist() and a[2:].tolist() == b[:2].tolist()


def test_batches_are_longest_first_and_bounded():
    assert sampling.batches([3, 9, 1, 7, 5], n=4, max_rows=8) == [[1, 3], [4, 0], [2]]
    assert sampling.batches([3, 9], n=10, max_rows=8) == [[1], [0]]  # one prompt even if n > max_rows


def test_errors():
    lm = CountingLM()
    with pytest.raises(ValueError, match="seeds"):
        sampling.sample(lm, [[1]], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        sampling.sample(lm, [[]], [0])
    assert sampling.sample(lm, [], []) == []


@pytest.fixture(scope="module")
def smol():
    from simlib.lm.weights import ModelNotFound, load_causal_lm

    try:
        return load_causal_lm("smollm2-135m")
    except (ModelNotFound, OSError) as e:  # pragma: no cover - environment without the model
        pytest.skip(f"smollm2-135m unavailable: {e}")


@pytest.mark.slow
def test_greedy_batch_equals_one_at_a_time_and_generate(smol):
    tok, model = smol
    prompts = [tok(t)["input_ids"] for t in ("AITA for skipping my sister's wedding because",
                                             "The best advice I ever got was",
                                             "NTA.")]
    eos = sampling.eos_ids(model, tok)
    kw = dict(n=2, max_new_tokens=8, temperature=0, eos_token_ids=eos, pad_token_id=tok.pad_token_id)
    together = sampling.sample(model, prompts, [0, 1, 2], **kw)
    alone = [sampling.sample(model, [p], [0], **kw)[0] for p in prompts]
    assert together == alone
    for p, rows in zip(prompts, alone):
        ref = model.generate(input_ids=torch.tensor([p]), do_sample=False, max_new_tokens=8,
                             pad_token_id=tok.pad_token_id)[0, len(p):].tolist()
        ref = ref[:ref.index(eos[0])] if eos[0] in ref else ref
        assert rows == [ref, ref]
