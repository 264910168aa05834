"""The budget that fits the configured model, chosen in one place so it applies however a run starts.

A real policy (a 7B model on a GPU server) gets the paper's search; the bundled SmolLM2-135M, which
decodes tens of tokens per second on a laptop CPU, gets a small search and a few-shot prompt that
shows it the step format and an explicit "The answer is N." line. A 135M critic cannot write the
path mode's JSON, so it critiques and revises step by step with short answers.
"""

from __future__ import annotations

from sigma_assets.method.mcts import MCTSSettings
from sigma_assets.method.refinement_records import RefinementSettings
from sigma_assets.settings import BUNDLED_SMOLLM2

# Two worked examples in ChatML, then the problem: a step that restates what is given, then a step that
# computes and states the answer. The examples are not bundled problems (other names, other numbers).
# Short on purpose: on a CPU every prompt token is paid again for every sample.
FEW_SHOT_TEMPLATE = (
    "<|im_start|>user\nKim has 14 shells and gives away 6. How many shells are left?<|im_end|>\n"
    "<|im_start|>assistant\nKim starts with 14 shells and gives away 6.\n\n"
    "14 - 6 = 8, so the answer is 8.<|im_end|>\n"
    "<|im_start|>user\nJay buys 3 boxes with 4 pens in each box. How many pens is that in total?<|im_end|>\n"
    "<|im_start|>assistant\nThere are 3 boxes with 4 pens each.\n\n"
    "3 * 4 = 12, so the answer is 12.<|im_end|>\n"
    "<|im_start|>user\n{problem}<|im_end|>\n<|im_start|>assistant\n"
)

SMALL_SEARCH = MCTSSettings(
    simulations=4,
    max_depth=3,
    step_max_tokens=24,
    rollout_max_tokens=32,
    prompt_template=FEW_SHOT_TEMPLATE,
)
SMALL_REFINEMENT = RefinementSettings(mode="step", critique_step_max_tokens=48, revision_step_max_tokens=32)


def search_budget(policy_model: str) -> MCTSSettings:
    """The paper's search (MCTSSettings' defaults) or, for the bundled CPU model, a small one."""
    return SMALL_SEARCH if policy_model == BUNDLED_SMOLLM2 else MCTSSettings()


def refinement_budget(critic_backend: str, critic_model: str) -> RefinementSettings:
    if critic_backend == "transformers" and critic_model == BUNDLED_SMOLLM2:
        return SMALL_REFINEMENT
    return RefinementSettings()
