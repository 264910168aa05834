"""Named training profiles: the paper's SFT hyperparameters per base model, and a tiny CPU profile.

The paper trains 3 epochs with a cosine schedule, 3 % warm-up, an effective batch of 128 and a
maximum length of 4096, in bf16 with packing; only the learning rate depends on the base model. The
`cpu` profile runs four optimizer steps of four short sequences: training the bundled SmolLM2 in fp32 costs
roughly 5 s per sequence on 2 CPU cores, so this keeps each variant near a minute.

No Dagster imports.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class TrainingProfile:
    name: str
    learning_rate: float
    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs
    effective_batch: int = 128
    per_device_batch: int = 4
    max_length: int = 4096
    warmup_ratio: float = 0.03
    scheduler: str = "cosine"
    bf16: bool = True
    packing: bool = True
    gradient_checkpointing: bool = True
    use_cpu: bool = False
    # What the trainer process is started with: `python` alone, or e.g. `accelerate launch` /
    # `torchrun --nproc-per-node 8` on a GPU machine (the trainer module is appended).
    launcher: tuple[str, ...] = ()
    logging_steps: int = 1
    seed: int = 0
    # Checkpoints to the storage root every this many optimizer steps and every this many minutes (0:
    # never); the last `keep_checkpoints` complete ones are kept, and a new run of the same training
    # resumes from the newest.
    checkpoint_steps: int = 100
    checkpoint_minutes: float = 30.0
    keep_checkpoints: int = 2

    def gradient_accumulation(self, world_size: int) -> int:
        """Steps to accumulate so that per-device batch x devices x steps is the effective batch."""
        return max(1, math.ceil(self.effective_batch / (self.per_device_batch * max(1, world_size))))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingProfile:
        return cls(**{**data, "launcher": tuple(data.get("launcher", ()))})


_PAPER = TrainingProfile(name="paper", learning_rate=5e-5)

PROFILES: dict[str, TrainingProfile] = {
    "deepseekmath-7b": replace(_PAPER, name="deepseekmath-7b", learning_rate=5e-5),
    "llama-3-8b": replace(_PAPER, name="llama-3-8b", learning_rate=1e-5),
    "mistral-7b": replace(_PAPER, name="mistral-7b", learning_rate=4e-6),
    # The embedded default: a few steps of the bundled SmolLM2 in fp32 on CPU, short sequences, no
    # packing (packed sequences need flash attention to stay apart).
    "cpu": TrainingProfile(
        name="cpu",
        learning_rate=5e-5,
        epochs=1.0,
        max_steps=3,
        effective_batch=4,
        per_device_batch=4,
        max_length=320,
        warmup_ratio=0.0,
        scheduler="cosine",
        bf16=False,
        packing=False,
        gradient_checkpointing=False,
        use_cpu=True,
        # Three steps of a demo: a checkpoint (weights and optimizer, 1.5 GB for SmolLM2) would cost more
        # than the steps it saves.
        checkpoint_steps=0,
        checkpoint_minutes=0.0,
    ),
}


def profile(name: str, **overrides: Any) -> TrainingProfile:
    """A named profile, with fields overridden (None values are ignored)."""
    if name not in PROFILES:
        raise ValueError(f"unknown training profile {name!r}: expected one of {', '.join(PROFILES)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(changes) - set(TrainingProfile.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown training profile fields: {', '.join(sorted(unknown))}")
    if "launcher" in changes:
        changes["launcher"] = tuple(changes["launcher"])
    return replace(PROFILES[name], **changes)
