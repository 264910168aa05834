"""The response store: atomic segments, reload, compaction, and write failures reaching the waiting put."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from upath import UPath

from sigma_assets.llm import response_store
from sigma_assets.llm.generation import Sample
from sigma_assets.llm.response_store import ResponseStore


def _samples(count: int, tag: str = "s") -> list[tuple[str, Sample]]:
    return [
        (f"{tag}{i:04d}", Sample(text=f"text {i}", prompt_tokens=i, completion_tokens=2))
        for i in range(count)
    ]


async def _put_groups(store: ResponseStore, groups: list[list[tuple[str, Sample]]]) -> None:
    await asyncio.gather(*(store.put_many(group) for group in groups))
    await store.aclose()


def test_segments_are_whole_and_reload(tmp_path: Path) -> None:
    root = UPath(tmp_path)
    store = ResponseStore(root, "ns")
    items = _samples(50)
    asyncio.run(_put_groups(store, [items[i : i + 5] for i in range(0, 50, 5)]))
    directory = tmp_path / "responses" / "ns"
    names = sorted(os.listdir(directory))
    assert names and all(name.endswith(".jsonl") for name in names)  # no temporary files left behind
    lines = [json.loads(line) for name in names for line in (directory / name).read_text().splitlines()]
    assert sorted(line["key"] for line in lines) == [key for key, _ in items]

    again = ResponseStore(root, "ns").load()
    assert len(again) == 50 and again.loaded_segments == len(names)
    sample = again.get("s0007")
    assert sample == Sample(text="text 7", prompt_tokens=7, completion_tokens=2, cached=True)


def test_compaction_merges_every_segment(tmp_path: Path) -> None:
    root = UPath(tmp_path)
    for part in range(3):  # three sessions, three segments
        asyncio.run(_put_groups(ResponseStore(root, "ns"), [_samples(4, f"p{part}-")]))
    fresh = ResponseStore(root, "ns")  # not loaded: compaction must still keep every segment's records
    assert fresh.compact() == 3
    assert len(os.listdir(tmp_path / "responses" / "ns")) == 1
    assert len(ResponseStore(root, "ns").load()) == 12
    assert fresh.compact() == 0


def test_write_failure_reaches_the_put_and_drops_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path: UPath, data: bytes) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(response_store, "write_atomic", broken)
    store = ResponseStore(UPath(tmp_path), "ns")

    async def put() -> None:
        with pytest.raises(OSError, match="disk full"):
            await store.put_many(_samples(3))
        await store.aclose()

    asyncio.run(put())
    assert len(store) == 0 and store.get("s0000") is None
    monkeypatch.undo()
    assert len(ResponseStore(UPath(tmp_path), "ns").load()) == 0


def test_s3_segments_reload_and_compact(s3_env: dict[str, str]) -> None:
    root = UPath(
        s3_env["SIGMA_STORAGE_URL"],
        key=s3_env["AWS_ACCESS_KEY_ID"],
        secret=s3_env["AWS_SECRET_ACCESS_KEY"],
        client_kwargs={"endpoint_url": s3_env["AWS_ENDPOINT_URL"]},
    )
    bucket = s3_env["SIGMA_STORAGE_URL"].removeprefix("s3://").split("/")[0]
    if not root.fs.exists(bucket):
        root.fs.mkdir(bucket)
    assert len(ResponseStore(root, "empty").load()) == 0  # a namespace nobody wrote to yet
    items = _samples(20)
    store = ResponseStore(root, "ns", max_writes=1)
    asyncio.run(_put_groups(store, [items[:10], items[10:]]))
    assert store.segments_written >= 1
    reloaded = ResponseStore(root, "ns").load()
    assert len(reloaded) == 20 and reloaded.get("s0019") is not None
    asyncio.run(_put_groups(ResponseStore(root, "ns"), [_samples(2, "late")]))
    assert ResponseStore(root, "ns").compact() >= 2
    assert len(ResponseStore(root, "ns").load()) == 22
