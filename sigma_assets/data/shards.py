"""Problem shards: a problem's shard is a stable hash of its id, so adding problems never moves old ones."""

from __future__ import annotations

import hashlib


def shard_keys(num_shards: int) -> list[str]:
    return [f"shard-{i:03d}" for i in range(num_shards)]


def shard_of(problem_id: str, num_shards: int) -> str:
    # sha256 rather than hash(): Python's str hash is salted per process.
    digest = hashlib.sha256(problem_id.encode("utf-8")).digest()
    return f"shard-{int.from_bytes(digest[:8], 'big') % num_shards:03d}"
