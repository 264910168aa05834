"""The policy's prompt in the policy model's own chat format (`method.policy_prompt`), real tokenizers."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from sigma_assets.method.policy_prompt import (
    CHATML_TEMPLATE,
    COT_INSTRUCTION,
    chat_template_prompt,
    policy_prompt,
    resolve_policy_prompt,
)

# Llama-3's chat template, as its tokenizer ships it: the template writes the BOS token itself.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{{ message['content'] + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def llama_like_tokenizer(adds_bos: bool) -> PreTrainedTokenizerFast:
    """A word-level tokenizer with Llama-3's specials; with `adds_bos`, encoding puts BOS in front as
    Llama-3's and DeepSeekMath's tokenizers do."""
    specials = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "[UNK]"]
    vocab = {token: i for i, token in enumerate([*specials, "a", "user", "assistant"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if adds_bos:
        backend.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", unk_token="[UNK]"
    )
    tokenizer.chat_template = LLAMA3_TEMPLATE
    return tokenizer


def test_the_policy_models_chat_template_formats_the_problem_and_the_cot_instruction(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    template = chat_template_prompt(tokenizer)
    assert template == CHATML_TEMPLATE  # the tiny model speaks ChatML without a system turn
    prompt = policy_prompt("What is {x} + 2?", ["Add.", "So 4."], template)
    assert prompt.startswith("<|im_start|>user\nWhat is {x} + 2?\n" + COT_INSTRUCTION + "<|im_end|>")
    assert prompt.endswith("<|im_start|>assistant\nAdd.\n\nSo 4.\n\n")


@pytest.mark.parametrize("adds_bos", [True, False])
def test_a_bos_token_is_sent_once(adds_bos: bool) -> None:
    tokenizer = llama_like_tokenizer(adds_bos)
    template = chat_template_prompt(tokenizer)
    assert template.startswith("<|start_header_id|>user") is adds_bos
    assert template.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    # As a completion endpoint encodes it: the tokenizer's own specials added, BOS exactly once.
    ids = tokenizer(policy_prompt("a", [], template))["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id


def test_a_template_in_config_wins_and_chatml_is_the_fallback(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    configured = resolve_policy_prompt("Q: {problem}\nA:", tokenizer, "tiny")
    assert (configured.template, configured.source) == ("Q: {problem}\nA:", "run config")
    assert resolve_policy_prompt(None, tokenizer, "tiny").source == "chat template of tiny"
    fallback = resolve_policy_prompt(None, None, "no tokenizer for a server model")
    assert fallback.template == CHATML_TEMPLATE
    assert fallback.source == "ChatML (no tokenizer for a server model)"
    tokenizer.chat_template = None
    assert resolve_policy_prompt(None, tokenizer, "tiny").source == "ChatML (tiny has no chat template)"
    with pytest.raises(ValueError, match="no \\{problem\\} placeholder"):
        resolve_policy_prompt("Solve it.", tokenizer, "tiny")
