"""BERTScore F1 reward: a generated reply against the target replies of its post.

The reward of the GRPO runs is BERTScore F1 (Zhang et al., 2020) between a completion and the
ground-truth references of the post it answers: the synthetic LLM replies for one run, the real
Reddit replies for the other. Several references per post are combined by ``max`` (as
``bert_score.BERTScorer.score`` does for a list of references) or ``mean``.

Encoder profiles
----------------
* ``ci``: ``minilm-l6`` (all-MiniLM-L6-v2, a local folder shipped in a PyPI package), all 6 layers,
  no baseline rescaling (bert_score has no baseline for it).
* ``paper``: ``microsoft/deberta-xlarge-mnli``, layer 40 (bert_score's default for it),
  ``rescale_with_baseline=True, lang="en"``, as HumanLM does.

What is computed
----------------
Exactly bert_score's F1 with ``idf=False``: each text is encoded as bert_score encodes it
(``bert_score.utils.sent_encode``: stripped, ``[CLS] ... [SEP]``, truncated to the tokenizer's
``model_max_length``), token embeddings of the chosen layer are L2-normalised, every candidate token is
matched greedily to its most similar reference token (precision) and every reference token to its most
similar candidate token (recall). ``[CLS]``/``[SEP]`` weigh 0 in the two averages, exactly as
bert_score's default idf dictionary does, but remain available as match targets, as in bert_score.
An empty candidate or reference scores raw F1 = 0 (bert_score's convention), before rescaling.

The difference from calling ``BERTScorer.score`` at every GRPO step: the reference embeddings of a
post are computed once and reused across steps, and only the new completions are encoded.

One deliberate difference: when ``BERTScorer.score`` batches pairs, it pads the shorter texts and
multiplies the similarity matrix by the padding mask, so padding contributes similarity 0 to the
greedy max; a token whose similarities to all real tokens are negative then gets 0 instead of its
best (negative) similarity, and the score of a pair depends on which other pairs share its batch
(with MiniLM this moves some short pairs by ~1e-3). Here padding never enters the max: every score
equals ``BERTScorer.score([candidate], [reference])`` called on that single pair (to ~1e-7; the
tests check 1e-6), independent of batching.

>>> r = BertScoreReward("minilm-l6", {"p1": ["I think you were right to leave."]})
>>> [round(x, 4) for x in r(["I think you were right to leave."], post_id=["p1"])]
[1.0]
"""
from __future__ import annotations

import functools
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from simlib.lm import weights

__all__ = ["BertScoreReward", "completion_text", "encoder_profile", "load_scorer"]


# ---------------------------------------------------------------------------------------------
# Encoder profiles and loading
# ---------------------------------------------------------------------------------------------
def encoder_profile(encoder: str, num_layers: int | None = None,
                    rescale_with_baseline: bool | None = None, lang: str = "en") -> dict[str, Any]:
    """``BERTScorer`` keyword arguments for an encoder name.

    A local model (a simlib name such as ``minilm-l6``, or a folder) is used with all its layers
    (``num_hidden_layers`` of its config) and no rescaling unless asked for. A hub id
    (``microsoft/deberta-xlarge-mnli``) takes bert_score's recommended layer and is rescaled with
    bert_score's baseline whenever one ships for it (the HumanLM setting).
    """
    from bert_score.utils import model2layers

    path = weights.resolve(encoder)
    local = weights.is_local(encoder) or Path(path).exists()
    if local:
        import json

        cfg = json.loads((Path(path) / "config.json").read_text())
        layers = num_layers if num_layers is not None else int(cfg["num_hidden_layers"])
        rescale = bool(rescale_with_baseline)
    else:
        layers = num_layers if num_layers is not None else model2layers.get(path)
        if layers is None:
            raise ValueError(f"bert_score has no default layer for {path!r}; pass num_layers")
        rescale = _has_baseline(path, lang) if rescale_with_baseline is None else rescale_with_baseline
    if rescale and not _has_baseline(path, lang):
        raise ValueError(f"bert_score ships no {lang!r} baseline for {path!r}: set rescale_with_baseline=False")
    return {"model_type": path, "num_layers": layers, "rescale_with_baseline": rescale,
            "lang": lang if rescale else None}


def _has_baseline(model_type: str, lang: str) -> bool:
    import bert_score

    return (Path(bert_score.__file__).parent / "rescale_baseline" / lang / f"{model_type}.tsv").is_file()


@functools.lru_cache(maxsize=4)
def load_scorer(model_type: str, num_layers: int, rescale_with_baseline: bool = False,
                lang: str | None = None, device: str | None = None):
    """A ``bert_score.BERTScorer`` (model + tokenizer loaded once per process and setting)."""
    from bert_score import BERTScorer

    return BERTScorer(model_type=model_type, num_layers=num_layers, lang=lang,
                      rescale_with_baseline=rescale_with_baseline, device=device, idf=False)


def completion_text(completion: Any) -> str:
    """The text of a completion: a string, or TRL's conversational form (a list of messages).

    >>> completion_text([{"role": "assistant", "content": "hi"}])
    'hi'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        content = completion.get("content", "")
    elif isinstance(completion, Sequence) and completion:
        msgs = [m for m in completion if isinstance(m, Mapping)]
        assistant = [m for m in msgs if m.get("role") == "assistant"] or msgs
        content = assistant[-1].get("content", "") if assistant else ""
    else:
        return ""
    if isinstance(content, list):  # content blocks: keep the text parts
        content = "".join(b.get("text", "") for b in content if isinstance(b, Mapping))
    return content or ""


# ---------------------------------------------------------------------------------------------
# The reward
# ---------------------------------------------------------------------------------------------
class _Encoded:
    """Normalised token embeddings and bert_score weights of a group of texts, padded."""

    __slots__ = ("emb", "mask", "weight", "empty")

    def __init__(self, emb: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, empty: torch.Tensor):
        self.emb = emb          # (n, L, d), unit vectors (padding rows zero)
        self.mask = mask        # (n, L) bool, real tokens (incl. [CLS]/[SEP])
        self.weight = weight    # (n, L) weights summing to 1 per text ([CLS]/[SEP]/padding 0)
        self.empty = empty      # (n,) bool, texts bert_score treats as empty (raw F1 0)


class BertScoreReward:
    """BERTScore F1 of completions against their post's references; a TRL reward function.

    Parameters
    ----------
    encoder:
        Encoder name (``minilm-l6``), local folder or hub id (``microsoft/deberta-xlarge-mnli``).
    references:
        ``post_id -> list of reference texts``. Each post's references are embedded once, the first
        time the post is scored (or all at once with :meth:`precompute`), and reused afterwards.
    aggregate:
        ``"max"`` (best matching reference, bert_score's multi-reference rule) or ``"mean"``.
    num_layers, rescale_with_baseline, lang:
        Override the encoder profile (see :func:`encoder_profile`).
    batch_size:
        Texts per encoder forward pass.
    device:
        Encoder device; default :func:`simlib.lm.hardware.pick_device` (CUDA when available, else CPU,
        unless ``$SIMLIB_DEVICE`` says otherwise).
    max_cached_posts:
        Keep at most this many posts' reference embeddings (least recently used dropped);
        ``None`` keeps all.
    name:
        ``__name__`` shown in TRL's logs (``rewards/<name>/mean``); default ``bertscore_<aggregate>``.

    ``stats`` counts the texts encoded: ``reference_texts`` grows only when a post is first seen.
    """

    def __init__(self, encoder: str = "minilm-l6", references: Mapping[Any, Sequence[str]] | None = None,
                 aggregate: str = "max", *, num_layers: int | None = None,
                 rescale_with_baseline: bool | None = None, lang: str = "en", batch_size: int = 64,
                 device: str | None = None, max_cached_posts: int | None = None, name: str | None = None):
        if aggregate not in ("max", "mean"):
            raise ValueError(f"aggregate must be 'max' or 'mean', got {aggregate!r}")
        self.encoder = encoder
        self.profile = encoder_profile(encoder, num_layers, rescale_with_baseline, lang)
        self.aggregate = aggregate
        self.batch_size = int(batch_size)
        self.max_cached_posts = max_cached_posts
        self.references: dict[Any, list[str]] = {k: list(v) for k, v in (references or {}).items()}
        if device is None:  # the one device rule (simlib.lm.hardware): CUDA when present, unless overridden
            from simlib.lm.hardware import pick_device

            device = pick_device()
        self.scorer = load_scorer(**self.profile, device=device)
        self.device = self.scorer.device
        self._model = self.scorer._model
        self._tokenizer = self.scorer._tokenizer
        self._baseline_f = (float(self.scorer.baseline_vals[2])
                            if self.profile["rescale_with_baseline"] else None)
        self._special = {self._tokenizer.cls_token_id, self._tokenizer.sep_token_id} - {None}
        self._cache: OrderedDict[Any, _Encoded] = OrderedDict()
        self.stats = {"reference_texts": 0, "reference_batches": 0, "candidate_texts": 0}
        self.__name__ = name or f"bertscore_{aggregate}"

    def __repr__(self) -> str:
        return (f"BertScoreReward(encoder={self.encoder!r}, aggregate={self.aggregate!r}, "
                f"posts={len(self.references)}, cached={len(self._cache)})")

    # --- TRL interface -------------------------------------------------------------------------
    def __call__(self, completions: Sequence[Any], post_id: Sequence[Any], **kwargs: Any) -> list[float]:
        """One reward per completion (TRL passes the dataset's ``post_id`` column, repeated)."""
        if len(completions) != len(post_id):
            raise ValueError(f"{len(completions)} completions but {len(post_id)} post ids")
        return self.score([completion_text(c) for c in completions], list(post_id))

    # --- scoring -------------------------------------------------------------------------------
    def score(self, candidates: Sequence[str], post_ids: Sequence[Any]) -> list[float]:
        """F1 (aggregated over each post's references) of ``candidates[i]`` for ``post_ids[i]``."""
        missing = [p for p in dict.fromkeys(post_ids) if p not in self.references]
        if missing:
            raise KeyError(f"no references for post(s) {missing[:5]!r}"
                           f"{' ...' if len(missing) > 5 else ''}")
        self.precompute(dict.fromkeys(post_ids))
        cands = self._encode(list(candidates))
        self.stats["candidate_texts"] += len(candidates)
        out: list[float] = []
        for i, pid in enumerate(post_ids):
            f = self._f1_against(cands, i, self._refs(pid))
            out.append(float(f.max() if self.aggregate == "max" else f.mean()))
        return out

    def score_all(self, candidate: str, post_id: Any) -> list[float]:
        """F1 of one candidate against each reference of its post (not aggregated)."""
        self.precompute([post_id])
        cands = self._encode([candidate])
        return [float(x) for x in self._f1_against(cands, 0, self._refs(post_id))]

    def precompute(self, post_ids: Iterable[Any] | None = None) -> None:
        """Embed the references of ``post_ids`` (default: all posts) that are not cached yet.

        Each post's references are encoded as a group of their own, so their embeddings (and the
        rewards) do not depend on which other posts happened to be embedded at the same time.
        """
        todo = [p for p in (self.references if post_ids is None else post_ids) if p not in self._cache]
        for p in todo:
            texts = self.references[p]
            if not texts:
                raise ValueError(f"post {p!r} has no references")
            self._cache[p] = self._encode(list(texts))
            self.stats["reference_texts"] += len(texts)
            self.stats["reference_batches"] += 1
            if self.max_cached_posts is not None:
                while len(self._cache) > self.max_cached_posts:
                    self._cache.popitem(last=False)

    def _refs(self, post_id: Any) -> _Encoded:
        if post_id not in self._cache:
            self.precompute([post_id])
        self._cache.move_to_end(post_id)
        return self._cache[post_id]

    def _f1_against(self, cands: _Encoded, i: int, refs: _Encoded) -> torch.Tensor:
        """Raw (or rescaled) F1 of candidate ``i`` against every reference: shape (n_refs,)."""
        n = int(cands.mask[i].sum())
        h_emb, h_w = cands.emb[i, :n], cands.weight[i, :n]
        sim = torch.einsum("hd,rld->rhl", h_emb, refs.emb)                    # (R, Lh, Lr)
        neg = torch.finfo(sim.dtype).min
        sim = sim.masked_fill(~refs.mask[:, None, :], neg)
        precision = (sim.max(dim=2).values * h_w).sum(dim=1)                  # (R,)
        best_for_ref = sim.max(dim=1).values.masked_fill(~refs.mask, 0.0)     # (R, Lr)
        recall = (best_for_ref * refs.weight).sum(dim=1)                      # (R,)
        f = 2 * precision * recall / (precision + recall)
        f = torch.nan_to_num(f, nan=0.0)
        f = f.masked_fill(refs.empty | cands.empty[i], 0.0)
        if self._baseline_f is not None:
            f = (f - self._baseline_f) / (1 - self._baseline_f)
        return f.double()

    # --- encoding (bert_score's get_bert_embedding, sentence by sentence identical) ----------------
    def _token_ids(self, text: str) -> list[int]:
        from bert_score.utils import sent_encode

        if not text.strip():
            # bert_score calls tokenizer.build_inputs_with_special_tokens([]), gone in transformers 5
            return list(self._tokenizer("", add_special_tokens=True)["input_ids"])
        return list(sent_encode(self._tokenizer, text))

    def _encode(self, texts: list[str]) -> _Encoded:
        ids = [self._token_ids(t) for t in texts]
        n = len(ids)
        lens = [len(x) for x in ids]
        L = max(lens) if lens else 1
        hidden = int(self._model.config.hidden_size)
        emb = torch.zeros(n, L, hidden)
        mask = torch.zeros(n, L, dtype=torch.bool)
        weight = torch.zeros(n, L, dtype=torch.float32)
        pad = self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else 0
        order = sorted(range(n), key=lambda k: -lens[k])  # similar lengths share a batch
        for s in range(0, n, self.batch_size):
            idx = order[s:s + self.batch_size]
            Lb = max(lens[k] for k in idx)
            x = torch.full((len(idx), Lb), pad, dtype=torch.long)
            am = torch.zeros(len(idx), Lb, dtype=torch.long)
            for j, k in enumerate(idx):
                x[j, :lens[k]] = torch.tensor(ids[k], dtype=torch.long)
                am[j, :lens[k]] = 1
            with torch.no_grad():
                out = self._model(x.to(self.device), attention_mask=am.to(self.device))[0]
            out = out.float().cpu()
            out = out / torch.norm(out, dim=-1, keepdim=True)
            for j, k in enumerate(idx):
                emb[k, :lens[k]] = out[j, :lens[k]]
        for k, tok in enumerate(ids):
            mask[k, :lens[k]] = True
            w = torch.tensor([0.0 if t in self._special else 1.0 for t in tok])
            total = w.sum()
            if total > 0:
                weight[k, :lens[k]] = w / total
        # bert_score: a text of only [CLS] [SEP] has all weights 0, F1 NaN, set to 0
        empty = torch.tensor([all(t in self._special for t in tok) for tok in ids], dtype=torch.bool)
        return _Encoded(emb, mask, weight, empty)


def mean_reward(reward: BertScoreReward, responses: Sequence[Sequence[str]], post_ids: Sequence[Any]) -> float:
    """Mean reward of ``responses[i]`` (several per post) for ``post_ids[i]``; NaN if none."""
    cands = [r for rs in responses for r in rs]
    pids = [p for p, rs in zip(post_ids, responses) for _ in rs]
    if not cands:
        return math.nan
    return float(sum(reward.score(cands, pids)) / len(cands))

