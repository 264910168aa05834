"""The local journal in front of a store on S3: answers durable in milliseconds, shipped as segments,
replayed after a crash; and what a crash costs, with the disk kept and with the disk lost."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from upath import UPath

from sigma_assets.llm import response_store
from sigma_assets.llm.generation import Sample
from sigma_assets.llm.response_store import ResponseStore
from sigma_assets.testing.fault_server import FaultServer


def s3_root(env: dict[str, str], secret: str | None = None) -> UPath:
    root = UPath(
        env["SIGMA_STORAGE_URL"],
        key=env["AWS_ACCESS_KEY_ID"],
        secret=secret or env["AWS_SECRET_ACCESS_KEY"],
        client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"]},
    )
    bucket = env["SIGMA_STORAGE_URL"].removeprefix("s3://").split("/")[0]
    if secret is None and not root.fs.exists(bucket):
        root.fs.mkdir(bucket)
    return root


def samples(count: int, tag: str = "s") -> list[tuple[str, Sample]]:
    return [(f"{tag}{i:04d}", Sample(f"text {i}", completion_tokens=2)) for i in range(count)]


def segments(root: UPath, namespace: str) -> list[str]:
    folder = root / "responses" / namespace
    folder.fs.invalidate_cache()
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def journal_files(journal_dir: Path) -> list[Path]:
    return sorted(journal_dir.glob("*/*.jsonl"))


def test_an_answer_is_durable_in_the_journal_then_shipped_as_one_segment(
    s3_env: dict[str, str], journal_dir: Path
) -> None:
    root = s3_root(s3_env)
    store = ResponseStore(root, "ns", ship_interval_s=60).load()

    async def run() -> None:
        started = time.perf_counter()
        await asyncio.gather(store.put_many(samples(5)), store.put_many(samples(5, "t")))
        local_s = time.perf_counter() - started
        # Durable on the local disk: the lines are in the journal, the storage root has nothing yet.
        [file] = journal_files(journal_dir)
        lines = [json.loads(line) for line in file.read_text().splitlines()]
        assert sorted(line["key"] for line in lines) == sorted(k for k, _ in samples(5) + samples(5, "t"))
        assert segments(root, "ns") == []
        # Another store loading meanwhile leaves a live process's journal alone.
        other = ResponseStore(root, "ns").load()
        assert len(other) == 0 and other.replayed_answers == 0 and file.exists()
        assert local_s < 0.5
        await store.aclose()  # ships
        assert segments(root, "ns") == [file.name] and not file.exists()

    asyncio.run(run())
    reloaded = ResponseStore(root, "ns", journal=False).load()
    assert len(reloaded) == 10 and reloaded.get("t0004") == Sample("text 4", completion_tokens=2, cached=True)


def test_a_full_journal_file_is_shipped_without_waiting_for_the_interval(s3_env: dict[str, str]) -> None:
    root = s3_root(s3_env)
    store = ResponseStore(root, "ns", ship_interval_s=60, max_batch=8)

    async def run() -> None:
        for part in range(3):
            await store.put_many(samples(8, f"p{part}-"))
        for _ in range(100):
            if len(segments(root, "ns")) == 3:
                break
            await asyncio.sleep(0.05)
        assert len(segments(root, "ns")) == 3  # shipped while the store is still open
        await store.aclose()

    asyncio.run(run())


PUT_AND_HANG = textwrap.dedent(
    """
    import asyncio, sys, time
    from upath import UPath
    from sigma_assets.llm.generation import Sample
    from sigma_assets.llm.response_store import ResponseStore

    url, endpoint, key, secret = sys.argv[1:5]
    root = UPath(url, key=key, secret=secret, client_kwargs={"endpoint_url": endpoint})
    store = ResponseStore(root, "ns", ship_interval_s=600)

    async def main():
        await store.put_many([(f"k{i}", Sample(f"answer {i}")) for i in range(10)])
        print("durable", flush=True)
        await asyncio.sleep(600)

    asyncio.run(main())
    """
)


def test_the_journal_of_a_killed_process_is_shipped_by_the_next_load(
    s3_env: dict[str, str], journal_dir: Path, tmp_path: Path
) -> None:
    root = s3_root(s3_env)
    script = tmp_path / "put_and_hang.py"
    script.write_text(PUT_AND_HANG)
    args = [s3_env["SIGMA_STORAGE_URL"], s3_env["AWS_ENDPOINT_URL"], s3_env["AWS_ACCESS_KEY_ID"]]
    child = subprocess.Popen(
        [sys.executable, str(script), *args, s3_env["AWS_SECRET_ACCESS_KEY"]],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert child.stdout is not None and child.stdout.readline().strip() == b"durable"
    assert ResponseStore(root, "ns").load().replayed_answers == 0  # alive: its journal is its own
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert segments(root, "ns") == [] and len(journal_files(journal_dir)) == 1

    store = ResponseStore(root, "ns").load()
    assert store.replayed_answers == 10 and store.get("k9") is not None
    assert journal_files(journal_dir) == [] and len(segments(root, "ns")) == 1
    assert len(ResponseStore(root, "ns", journal=False).load()) == 10  # on the storage root for anyone


def test_a_torn_last_line_is_dropped_on_replay(s3_env: dict[str, str], journal_dir: Path) -> None:
    root = s3_root(s3_env)
    store = ResponseStore(root, "ns")
    assert store._journal is not None
    whole = response_store._encode_segment(samples(2))
    (store._journal.folder / "00000000000000000001-torn.jsonl").write_bytes(whole + b'{"key": "s00')
    loaded = ResponseStore(root, "ns").load()
    assert loaded.replayed_answers == 2 and len(loaded) == 2
    assert journal_files(journal_dir) == []


def test_answers_the_storage_root_refuses_stay_in_the_journal_and_the_close_says_so(
    s3_env: dict[str, str], journal_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(response_store, "SHIP_ATTEMPTS", 2)
    root = s3_root(s3_env)
    refused = s3_root(s3_env, secret="not-the-secret")  # every PUT is refused
    store = ResponseStore(refused, "ns", ship_interval_s=0.05)

    async def run() -> None:
        await store.put_many(samples(3))  # durable locally all the same
        with pytest.raises(RuntimeError, match="kept in the response journal"):
            await store.aclose()

    asyncio.run(run())
    assert len(journal_files(journal_dir)) == 1 and segments(root, "ns") == []  # nothing lost
    assert ResponseStore(root, "ns").load().replayed_answers == 3  # the right keys: shipped now
    assert len(ResponseStore(root, "ns", journal=False).load()) == 3


# -- what a crash costs, through the client --------------------------------------------------------------

CONCURRENCY = 8
REQUESTS = 300

CLIENT_RUN = textwrap.dedent(
    """
    import sys
    from upath import UPath
    from sigma_assets.llm.backends.openai_compat import OpenAIBackend
    from sigma_assets.llm.client import LLMClient
    from sigma_assets.llm.generation import GenerationRequest, SamplingParams, user
    from sigma_assets.llm.response_store import ResponseStore

    url, endpoint, key, secret, base_url, count, concurrency, interval = sys.argv[1:9]
    root = UPath(url, key=key, secret=secret, client_kwargs={"endpoint_url": endpoint})
    store = ResponseStore(root, "crash", ship_interval_s=float(interval)).load()
    requests = [
        GenerationRequest(messages=user(f"question {i}"), params=SamplingParams(max_tokens=8))
        for i in range(int(count))
    ]
    with LLMClient(OpenAIBackend("m", base_url=base_url), store, int(concurrency)) as client:
        answers = client.generate(requests)
    print(len(answers), client.usage.store_hits, store.replayed_answers)
    """
)


def run_killed_then_relaunched(
    s3_env: dict[str, str], tmp_path: Path, server: FaultServer, interval_s: float, lose_disk: bool
) -> tuple[int, int]:
    """SIGKILL the client half way, relaunch it; returns (requests the server saw, answers lost with the
    disk: journaled but not shipped at the kill)."""
    script = tmp_path / "client_run.py"
    script.write_text(CLIENT_RUN)
    args = [
        sys.executable,
        str(script),
        s3_env["SIGMA_STORAGE_URL"],
        s3_env["AWS_ENDPOINT_URL"],
        s3_env["AWS_ACCESS_KEY_ID"],
        s3_env["AWS_SECRET_ACCESS_KEY"],
        server.base_url,
        str(REQUESTS),
        str(CONCURRENCY),
        str(interval_s),
    ]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    child = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while server.stats()["total"] < REQUESTS // 2:
        assert child.poll() is None, child.stderr.read().decode()[-3000:] if child.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    journal = Path(os.environ["SIGMA_JOURNAL_DIR"])
    unshipped = sum(len(f.read_text().splitlines()) for f in journal_files(journal))
    if lose_disk:
        shutil.rmtree(journal)
    rerun = subprocess.run(args, env=env, capture_output=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]
    answered, _, replayed = (int(x) for x in rerun.stdout.split())
    assert answered == REQUESTS
    assert replayed == (0 if lose_disk else unshipped)
    return server.stats()["total"], unshipped


def test_a_killed_client_pays_at_most_the_concurrency_twice(s3_env: dict[str, str], tmp_path: Path) -> None:
    # Ship rarely: at the kill, most answers are only in the local journal, which the relaunch replays.
    with FaultServer(latency_s=0.02) as server:
        total, unshipped = run_killed_then_relaunched(s3_env, tmp_path, server, 30.0, lose_disk=False)
    assert unshipped > 0  # the replay, not the storage root, saved them
    assert REQUESTS <= total <= REQUESTS + CONCURRENCY


def test_with_the_disk_lost_a_killed_client_pays_at_most_what_was_not_shipped(
    s3_env: dict[str, str], tmp_path: Path
) -> None:
    with FaultServer(latency_s=0.02) as server:
        total, unshipped = run_killed_then_relaunched(s3_env, tmp_path, server, 0.2, lose_disk=True)
    # Lost with the disk: the answers of the last ship interval (0.2 s here), never more than
    # `max_unshipped`; plus, as always, the calls in flight.
    assert unshipped <= response_store.MAX_UNSHIPPED
    assert REQUESTS <= total <= REQUESTS + CONCURRENCY + unshipped
