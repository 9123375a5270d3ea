"""Chat templates rendered with thinking off: the one place a local model's prompt is rendered.

Qwen3's chat template thinks by default: a generation prompt without ``enable_thinking=False`` lets
the model open its reply with ``<think>``, so own samples and GRPO rollouts would spend their tokens
on reasoning, and a reply scored after that prompt would be scored where the model expects
``<think>``. With the switch off the template closes an empty think block itself, and the reply
starts where a user simulator's should. Templates without the switch (SmolLM2's) render exactly as
before: the switch is passed only to templates whose source reads it.

Every local chat-template call renders through :func:`render` (log-prob prompts in
:func:`simlib.lm.logprob.build_prompt`, policy evaluation in :func:`simlib.train.generate_responses`);
TRL renders GRPO's prompts itself and gets :data:`THINKING_OFF` through ``GRPOConfig``'s
``chat_template_kwargs`` (:func:`simlib.train._grpo_config`).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

# The template variable and its "off" value. A variable that a template does not read changes
# nothing, which is why TRL can be given it for every policy.
THINKING_OFF: dict[str, Any] = {"enable_thinking": False}


def template_source(tokenizer: Any) -> str:
    """The chat template's Jinja source ('' without one); all named templates where there are several."""
    tpl = getattr(tokenizer, "chat_template", None)
    if isinstance(tpl, Mapping):
        return "\n".join(str(v) for v in tpl.values())
    return str(tpl or "")


def has_thinking_switch(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template reads a thinking switch (``enable_thinking``)."""
    src = template_source(tokenizer)
    return any(name in src for name in THINKING_OFF)


def template_kwargs(tokenizer: Any) -> dict[str, Any]:
    """The extra template variables that turn thinking off for this tokenizer ({} without a switch)."""
    return dict(THINKING_OFF) if has_thinking_switch(tokenizer) else {}


def render(tokenizer: Any, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True,
           tokenize: bool = False, **kwargs: Any) -> Any:
    """``tokenizer.apply_chat_template`` with thinking off where the template has the switch.

    Defaults to the text of a generation prompt (``tokenize=False``); other keyword arguments
    (``return_dict=True``, ...) pass through.
    """
    return tokenizer.apply_chat_template(list(messages), add_generation_prompt=add_generation_prompt,
                                         tokenize=tokenize, **template_kwargs(tokenizer), **kwargs)
