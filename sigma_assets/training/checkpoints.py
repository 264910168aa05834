"""Training checkpoints on the storage root: a crashed or pre-empted training resumes instead of restarting.

Checkpoints of one training (one data set, base model and profile: its fingerprint) live under
`<root>/models/<variant>/checkpoints/<fingerprint>/checkpoint-<step>/`, the last few kept. A checkpoint
is complete once its `.complete` marker is written, after the trainer has saved everything in it: a
half-written one (the process died while saving) is never resumed from. A new training looks for its own
fingerprint's newest complete checkpoint; checkpoints of another fingerprint mean the data set or the
profile changed, and it starts fresh, saying which. `progress.json` records the last step reached, so a
resumed training can say how many steps it lost.

On a local root the trainer writes the checkpoints in place; on an object store it writes them to a
local staging folder and each complete checkpoint is uploaded, the marker last.

No Dagster imports.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from upath import UPath

from sigma_assets.data.storage import write_atomic

COMPLETE = ".complete"
FINGERPRINT_FILE = "fingerprint.json"
PROGRESS_FILE = "progress.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# Profile fields that do not change what is trained.
_NOT_TRAINING = ("launcher", "logging_steps", "checkpoint_steps", "checkpoint_minutes", "keep_checkpoints")


def training_fingerprint(dataset_path: str, base_model: str, profile: dict[str, Any]) -> dict[str, Any]:
    """What a training is: its data (content hash), base model and the profile fields that shape it."""
    digest = hashlib.sha256()
    with open(dataset_path, "rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    shaping = {k: v for k, v in sorted(profile.items()) if k not in _NOT_TRAINING}
    description = {"dataset_sha256": digest.hexdigest(), "base_model": base_model, "profile": shaping}
    key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]
    return {"key": key, **description}


def _changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    if old.get("dataset_sha256") != new["dataset_sha256"]:
        return "the data set changed"
    if old.get("base_model") != new["base_model"]:
        return f"the base model changed ({old.get('base_model')} -> {new['base_model']})"
    fields = sorted(
        k
        for k in set(old.get("profile", {})) | set(new["profile"])
        if old.get("profile", {}).get(k) != new["profile"].get(k)
    )
    return (
        "the profile changed ("
        + ", ".join(f"{k}: {old.get('profile', {}).get(k)} -> {new['profile'].get(k)}" for k in fields)
        + ")"
    )


@dataclass
class Resume:
    """Where a training starts: a local checkpoint folder to resume from (or None), and why."""

    checkpoint: str | None
    step: int
    steps_lost: int
    fresh_because: str | None  # a reason when checkpoints of another training were there


class CheckpointStore:
    """The checkpoints of one training under `base` (`<root>/models/<variant>/checkpoints`)."""

    def __init__(self, base: UPath, fingerprint: dict[str, Any], staging: Path, keep: int = 2):
        self.base = base
        self.fingerprint = fingerprint
        self.dir = base / fingerprint["key"]
        self.keep = max(1, keep)
        self.local = self.dir.protocol in ("", "file", "local")
        # Where the trainer writes: in place on a local root, else a local folder uploaded from.
        self.output_dir = Path(str(self.dir.path)) if self.local else staging
        self._last_progress = 0.0
        # One launch of several processes shares this id (torchrun sets it); rank 0 prepares, others wait.
        self.launch = os.environ.get("TORCHELASTIC_RUN_ID", "")

    # -- before training -------------------------------------------------------------------------------

    def resume(self) -> Resume:
        """The newest complete checkpoint of this training, fetched to `output_dir` if remote (rank 0)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        others = self._other_trainings()
        _write(self.dir / FINGERPRINT_FILE, json.dumps(self.fingerprint, indent=2))
        complete = self.complete_steps()
        if self.local:  # a checkpoint the last run died writing: never resumed from, never mixed into
            for entry in self.output_dir.iterdir():
                m = _CHECKPOINT_RE.match(entry.name)
                if m and int(m.group(1)) not in complete:
                    shutil.rmtree(entry, ignore_errors=True)
        progress = self._progress().get("step", 0)
        if not complete:
            reason = None
            if others:
                reason = f"starting fresh: {_changes(others[0], self.fingerprint)} since the last checkpoints"
            result = Resume(None, 0, 0, reason)
        else:
            step = complete[-1]
            folder = self.output_dir / f"checkpoint-{step}"
            if not self.local:
                if folder.exists():
                    shutil.rmtree(folder)
                self._download(self.dir / f"checkpoint-{step}", folder)
            result = Resume(str(folder), step, max(0, progress - step), None)
        prepared = {"launch": self.launch, **asdict(result)}
        _write(UPath(self.output_dir / ".resume.json"), json.dumps(prepared))
        return result

    def ready(self) -> Resume | None:
        """What rank 0 prepared for this launch, once it has (other ranks)."""
        path = self.output_dir / ".resume.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        if data.pop("launch") != self.launch:
            return None
        return Resume(**data)

    def _other_trainings(self) -> list[dict[str, Any]]:
        """Fingerprints of the other trainings that left checkpoints here, newest first."""
        if not self.base.exists():
            return []
        found = []
        for entry in self.base.iterdir():
            marker = entry / FINGERPRINT_FILE
            if entry.name != self.fingerprint["key"] and marker.exists():
                found.append((entry, json.loads(marker.read_text())))
        return [fp for _, fp in sorted(found, key=lambda item: item[0].name, reverse=True)]

    def complete_steps(self) -> list[int]:
        steps = []
        if self.dir.exists():
            for entry in self.dir.iterdir():
                m = _CHECKPOINT_RE.match(entry.name)
                if m and (entry / COMPLETE).exists():
                    steps.append(int(m.group(1)))
        return sorted(steps)

    # -- while training (rank 0) -----------------------------------------------------------------------

    def saved(self, step: int) -> None:
        """The trainer finished writing checkpoint `step`: publish it (remote), mark it complete, prune."""
        folder = self.output_dir / f"checkpoint-{step}"
        target = self.dir / f"checkpoint-{step}"
        # The trainer pickles its arguments into every checkpoint; resuming never reads them, and no
        # pickle goes to shared storage (the weights are safetensors, the optimizer torch's tensor files).
        (folder / "training_args.bin").unlink(missing_ok=True)
        if not self.local:
            self._upload(folder, target)
        _write(target / COMPLETE, json.dumps({"step": step, "at": time.time()}))
        for old in self.complete_steps()[: -self.keep]:
            self._remove(self.dir / f"checkpoint-{old}")
        self.progress(step, force=True)

    def progress(self, step: int, force: bool = False) -> None:
        """Record the last step reached (at most every few seconds on an object store)."""
        now = time.monotonic()
        if not force and not self.local and now - self._last_progress < 30:
            return
        self._last_progress = now
        _write(self.dir / PROGRESS_FILE, json.dumps({"step": step, "pid": os.getpid()}))

    def _progress(self) -> dict[str, Any]:
        path = self.dir / PROGRESS_FILE
        try:
            return json.loads(path.read_text()) if path.exists() else {}
        except ValueError:  # not ours to trust: written by a version that did not write atomically
            return {}

    # -- copying ---------------------------------------------------------------------------------------

    def _upload(self, folder: Path, target: UPath) -> None:
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            destination = target / file.relative_to(folder).as_posix()
            destination.fs.put_file(str(file), destination.path)

    def _download(self, source: UPath, folder: Path) -> None:
        source.fs.get(source.path, str(folder), recursive=True)

    def _remove(self, target: UPath) -> None:
        if self.local:
            shutil.rmtree(str(target.path), ignore_errors=True)
        else:
            target.fs.rm(target.path, recursive=True)


def _write(path: UPath, text: str) -> None:
    """Whole or not at all: a process killed mid-write leaves no half a file."""
    write_atomic(path, text.encode())
