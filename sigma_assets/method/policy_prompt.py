"""The policy's prompt: the problem in the policy model's own chat format, with the paper's CoT instruction.

The search sends completion prompts (the chat turn rendered as text, then the steps so far), so that each
node's prompt extends its parent's byte for byte and a server's prefix cache reuses it. The text of the
turn is the policy model's own chat template rendered once, with a placeholder where the problem goes:
Qwen2.5-Math gets ChatML with its default system turn, DeepSeekMath and Llama-3 their own markers.
ChatML is the fallback when no tokenizer is at hand; a template set in the run config wins over both.

Plain Python with no Dagster imports; a tokenizer is anything with transformers' `apply_chat_template`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PROBLEM = "{problem}"
# The chain-of-thought instruction of the paper's policy (Qwen2.5-Math's own evaluation prompt).
COT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CHATML_TEMPLATE = f"<|im_start|>user\n{PROBLEM}\n{COT_INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n"
# Stands in for the problem while the chat template renders: templates may escape or strip braces.
_SLOT = "\uf8ffPROBLEM\uf8ff"


@dataclass(frozen=True)
class PolicyPrompt:
    """The template the search fills with each problem, and where it came from (for the metadata)."""

    template: str
    source: str


def chat_template_prompt(tokenizer: Any) -> str:
    """The user turn "<problem>\\n<CoT instruction>" in `tokenizer`'s chat template, ready for the reply.

    A tokenizer that puts its BOS token in front by itself when it encodes (Llama-3, DeepSeekMath,
    Mistral) would get it twice from a template that also writes it: the rendered BOS is dropped, as
    vLLM's and transformers' completion endpoints add it again."""
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": f"{_SLOT}\n{COT_INSTRUCTION}"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    if not isinstance(rendered, str) or rendered.count(_SLOT) != 1:
        raise ValueError("the chat template did not render the problem exactly once")
    bos = getattr(tokenizer, "bos_token", None)
    if bos and rendered.startswith(bos) and _adds_bos(tokenizer):
        rendered = rendered[len(bos) :]
    return rendered.replace(_SLOT, PROBLEM)


def _adds_bos(tokenizer: Any) -> bool:
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def resolve_policy_prompt(configured: str | None, tokenizer: Any | None, tokenizer_name: str) -> PolicyPrompt:
    """The template in config if set; else the chat template of `tokenizer`; else ChatML. Without a
    tokenizer, `tokenizer_name` says why there is none."""
    if configured:
        if PROBLEM not in configured:
            raise ValueError(f"the configured prompt_template has no {PROBLEM} placeholder")
        return PolicyPrompt(configured, "run config")
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return PolicyPrompt(chat_template_prompt(tokenizer), f"chat template of {tokenizer_name}")
    why = tokenizer_name if tokenizer is None else f"{tokenizer_name} has no chat template"
    return PolicyPrompt(CHATML_TEMPLATE, f"ChatML ({why})")


def policy_prompt(
    problem: str, steps: Sequence[str], template: str = CHATML_TEMPLATE, delimiter: str = "\n\n"
) -> str:
    """The completion prompt of a node: the problem in `template`, then each step so far + delimiter.

    Pure concatenation, so every node's prompt is a byte-identical extension of its parent's. The
    placeholder is replaced literally, so templates may hold other braces such as `\\boxed{}`."""
    return template.replace(PROBLEM, problem) + "".join(step + delimiter for step in steps)
