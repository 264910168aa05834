"""Generate with `VLLMBackend` on a real in-process vLLM engine and write what came back as JSON.

Run by `test_vllm_cpu.py` with the interpreter of `.venv-vllm` (vLLM's own torch and transformers), with
the project root on PYTHONPATH: the backend module imports only `sigma_assets.llm.generation` and the
standard library, so the project's own dependencies are not needed there.

    .venv-vllm/bin/python sigma_assets_tests/vllm_engine_run.py MODEL_DIR OUT.json

The assertions live in the test; this script only drives the backend, in three `generate` calls:
1. a mixed batch (completions and a chat): seeds repeated and varied, greedy decoding, a token limit;
2. the seeded completion again, now with a stop string taken from its first sample's text;
3. nothing (an empty batch), then `close`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from pathlib import Path

from sigma_assets.llm.backends.vllm_engine import VLLMBackend
from sigma_assets.llm.generation import GenerationRequest, SamplingParams, user

PROMPT = (
    "<|im_start|>user\nWhat is 7 + 5?\n"
    "Please reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
SEEDED = SamplingParams(n=3, temperature=0.9, max_tokens=32, seed=11)


def pick_stop(text: str) -> str:
    """A stop string that occurs in `text` after its start: its third word, else its last character."""
    words = text.split()
    return words[2] if len(words) > 2 else text[-1]


async def main(model_dir: str, out: Path) -> None:
    backend = VLLMBackend(
        model_dir, model_name="smollm2", dtype="float32", max_model_len=2048, enforce_eager=True
    )
    first = [
        GenerationRequest(prompt=PROMPT, params=SEEDED),
        GenerationRequest(
            messages=user("What is 2 + 3? Answer with the number only."), params=SamplingParams()
        ),
        GenerationRequest(prompt=PROMPT, params=SEEDED),
        # Far from 11: vLLM seeds the i-th of n samples with seed + i, so seed 12 would repeat samples.
        GenerationRequest(prompt=PROMPT, params=dataclasses.replace(SEEDED, seed=1011)),
        GenerationRequest(prompt=PROMPT, params=SamplingParams(max_tokens=3)),
    ]
    batch = await backend.generate(first)
    stop = pick_stop(batch[0][0].text)
    stopped = await backend.generate(
        [GenerationRequest(prompt=PROMPT, params=dataclasses.replace(SEEDED, stop=(stop,)))]
    )
    empty = await backend.generate([])
    await backend.close()
    result = {
        "batch": [[dataclasses.asdict(s) for s in samples] for samples in batch],
        "stop": stop,
        "stopped": [dataclasses.asdict(s) for s in stopped[0]],
        "empty": empty,
    }
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
