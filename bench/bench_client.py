"""Benchmark of the LLM client layer (LLMClient + OpenAIBackend + ResponseStore on S3) against a bare client.

    python bench/bench_client.py [--quick]

Starts a real S3 server (SeaweedFS, in a temporary folder) and the fault-injecting OpenAI-compatible server
in a child process (so it does not share our GIL), then measures, each side by side with a BARE client
(AsyncOpenAI + asyncio.Semaphore, max_retries=0, the same transport and connection limits) in the same
run. Both use the SDK's aiohttp transport (the layer's default); `--transport httpx` measures the SDK's
default httpx transport instead, and the overhead figure adds a bare httpx client for context:

- throughput: N chat requests at 500 ms server latency, concurrency 64 (fraction of ideal and of bare);
- overhead: 2N requests at 10 ms latency, concurrency 256 (layer req/s over bare req/s), plus a bare
  client that PUTs each response to S3 for context;
- replay: the throughput requests again through a fresh client and a reloaded store;
- faults: 20% injected faults (429, 500, timeout, truncated, length);
- crash: the layer in a child process, SIGKILLed half way, then rerun: requests paid twice.

Runs alternate (ABBA) to reduce the noise of a shared machine; ratios are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "infra"))

import openai  # noqa: E402
from upath import UPath  # noqa: E402

from sigma_assets.llm.backends.openai_compat import OpenAIBackend, sdk_http  # noqa: E402
from sigma_assets.llm.client import LLMClient  # noqa: E402
from sigma_assets.llm.generation import GenerationRequest, Message, SamplingParams  # noqa: E402
from sigma_assets.llm.response_store import ResponseStore  # noqa: E402
from sigma_assets.llm.retry import RetrySettings  # noqa: E402
from sigma_assets.testing.fault_server import FaultConfig, FaultServerProcess  # noqa: E402

S3_KEY = "sigma-bench"
S3_SECRET = "sigma-bench-secret"
BUCKET = "sigma-bench"
MODEL = "fault-model"
MAX_CONNECTIONS = 512  # OpenAIBackend's default connection limit; the bare client uses the same
TRANSPORT = "aiohttp"  # set from --transport
PARAMS = SamplingParams(max_tokens=32)


def requests_for(count: int, tag: str) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            messages=(Message("user", f"{tag} question {i}: what is {i} + {i}?"),), params=PARAMS
        )
        for i in range(count)
    ]


def s3_root(endpoint: str, prefix: str) -> UPath:
    return UPath(
        f"s3://{BUCKET}/{prefix}", key=S3_KEY, secret=S3_SECRET, client_kwargs={"endpoint_url": endpoint}
    )


# -- the two clients ------------------------------------------------------------------------------------


def bare_openai(base_url: str, timeout_s: float = 120.0, transport: str | None = None) -> openai.AsyncOpenAI:
    limits = sdk_http.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS)
    http_class = (
        openai.DefaultAioHttpClient
        if (transport or TRANSPORT) == "aiohttp"
        else openai.DefaultAsyncHttpxClient
    )
    return openai.AsyncOpenAI(
        base_url=base_url,
        api_key="unused",
        max_retries=0,
        timeout=timeout_s,
        http_client=http_class(limits=limits, timeout=timeout_s),
    )


async def run_bare(
    base_url: str,
    requests: list[GenerationRequest],
    concurrency: int,
    put_root: UPath | None = None,
    timeout_s: float = 120.0,
    transport: str | None = None,
) -> dict[str, Any]:
    """AsyncOpenAI + Semaphore; with put_root, each response is PUT to S3 before its slot is freed."""
    client = bare_openai(base_url, timeout_s, transport)
    semaphore = asyncio.Semaphore(concurrency)
    fs = put_root.fs if put_root is not None else None
    failed = 0

    async def one(index: int, request: GenerationRequest) -> None:
        nonlocal failed
        assert request.messages is not None
        async with semaphore:
            try:
                response = await client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": m.role, "content": m.content} for m in request.messages],
                    n=1,
                    temperature=request.params.temperature,
                    top_p=request.params.top_p,
                    max_tokens=request.params.max_tokens,
                )
                text = response.choices[0].message.content or ""
            except Exception:
                failed += 1
                return
            if fs is not None and put_root is not None:
                body = json.dumps({"index": index, "text": text}).encode()
                await asyncio.to_thread(fs.pipe_file, (put_root / f"{index:06d}.json").path, body)

    started = time.perf_counter()
    await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
    elapsed = time.perf_counter() - started
    await client.close()
    return {"seconds": elapsed, "rps": len(requests) / elapsed, "failed": failed}


async def run_layer(
    base_url: str,
    requests: list[GenerationRequest],
    concurrency: int,
    root: UPath,
    namespace: str,
    timeout_s: float = 120.0,
    load: bool = False,
    journal: bool = True,
) -> dict[str, Any]:
    """LLMClient + OpenAIBackend + ResponseStore; time includes loading the store when `load`. Without
    `journal`, each answer is durable only once its segment is on S3 (the store before the journal)."""
    started = time.perf_counter()
    store = ResponseStore(root, namespace, journal=journal)
    if load:
        await asyncio.to_thread(store.load)
    loaded = time.perf_counter()
    backend = OpenAIBackend(
        MODEL, base_url=base_url, timeout_s=timeout_s, max_connections=MAX_CONNECTIONS, transport=TRANSPORT
    )
    client = LLMClient(backend, store, concurrency=concurrency, retry=RetrySettings(max_attempts=10))
    results = await client.agenerate(requests)
    elapsed = time.perf_counter() - started
    await client.aclose()
    assert len(results) == len(requests) and all(len(r) == 1 for r in results)
    return {
        "seconds": elapsed,
        "load_seconds": loaded - started,
        "rps": len(requests) / elapsed,
        "usage": client.usage,
        "segments_written": store.segments_written,
        "loaded_segments": store.loaded_segments,
    }


# -- figures --------------------------------------------------------------------------------------------


@dataclass
class Env:
    server: FaultServerProcess
    s3_endpoint: str
    quick: bool

    def server_total(self) -> int:
        return int(self.server.stats()["total"])


def _ns() -> str:
    return uuid.uuid4().hex[:10]


def alternate(env: Env, runs: dict[str, Any], reps: int) -> dict[str, list[dict[str, Any]]]:
    """Run each labelled coroutine factory `reps` times, in ABBA order, and collect the results."""
    labels = list(runs)
    out: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    for rep in range(reps):
        order = labels if rep % 2 == 0 else labels[::-1]
        for label in order:
            result = asyncio.run(runs[label]())
            out[label].append(result)
            print(f"    {label:<10} {result['rps']:8.1f} req/s  ({result['seconds']:.2f} s)", flush=True)
    return out


def mean_rps(results: list[dict[str, Any]]) -> float:
    return statistics.mean(r["rps"] for r in results)


def throughput(env: Env, count: int, reps: int) -> dict[str, Any]:
    latency, concurrency = 0.5, 64
    env.server.configure(latency_s=latency, fault_rate=0.0)
    requests = requests_for(count, "throughput")
    root = s3_root(env.s3_endpoint, "throughput")
    namespaces: list[str] = []

    async def layer() -> dict[str, Any]:
        namespaces.append(_ns())
        return await run_layer(env.server.base_url, requests, concurrency, root, namespaces[-1])

    async def unjournaled() -> dict[str, Any]:
        return await run_layer(env.server.base_url, requests, concurrency, root, _ns(), journal=False)

    print(f"throughput: {count} requests, {latency * 1000:.0f} ms latency, concurrency {concurrency}")
    results = alternate(
        env,
        {
            "bare": lambda: run_bare(env.server.base_url, requests, concurrency),
            "layer": layer,
            "no journal": unjournaled,
        },
        reps,
    )
    ideal = concurrency / latency
    bare, lay = mean_rps(results["bare"]), mean_rps(results["layer"])
    before = mean_rps(results["no journal"])
    return {
        "ideal_rps": ideal,
        "bare_rps": bare,
        "layer_rps": lay,
        "bare_of_ideal": bare / ideal,
        "layer_of_ideal": lay / ideal,
        "layer_of_bare": lay / bare,
        "unjournaled_rps": before,
        "unjournaled_of_bare": before / bare,
        "unjournaled_of_ideal": before / ideal,
        "layer_seconds": statistics.mean(r["seconds"] for r in results["layer"]),
        "segments": [r["segments_written"] for r in results["layer"]],
        "replay_namespace": namespaces[-1],
        "requests": requests,
        "root": root,
    }


def overhead(env: Env, count: int, reps: int) -> dict[str, Any]:
    latency, concurrency = 0.01, 256
    env.server.configure(latency_s=latency, fault_rate=0.0)
    requests = requests_for(count, "overhead")
    root = s3_root(env.s3_endpoint, "overhead")

    async def layer() -> dict[str, Any]:
        return await run_layer(env.server.base_url, requests, concurrency, root, _ns())

    async def unjournaled() -> dict[str, Any]:
        return await run_layer(env.server.base_url, requests, concurrency, root, _ns(), journal=False)

    async def bare_put() -> dict[str, Any]:
        return await run_bare(env.server.base_url, requests, concurrency, put_root=root / "bare" / _ns())

    print(f"overhead: {count} requests, {latency * 1000:.0f} ms latency, concurrency {concurrency}")
    results = alternate(
        env,
        {
            "bare": lambda: run_bare(env.server.base_url, requests, concurrency),
            "layer": layer,
            "no journal": unjournaled,
            "bare+put": bare_put,
            "bare httpx": lambda: run_bare(env.server.base_url, requests, concurrency, transport="httpx"),
        },
        reps,
    )
    bare = mean_rps(results["bare"])
    return {
        "bare_rps": bare,
        "layer_rps": mean_rps(results["layer"]),
        "bare_put_rps": mean_rps(results["bare+put"]),
        "layer_of_bare": mean_rps(results["layer"]) / bare,
        "unjournaled_of_bare": mean_rps(results["no journal"]) / bare,
        "bare_put_of_bare": mean_rps(results["bare+put"]) / bare,
        "bare_httpx_rps": mean_rps(results["bare httpx"]),
        "segments": [r["segments_written"] for r in results["layer"]],
    }


def replay(env: Env, first: dict[str, Any]) -> dict[str, Any]:
    env.server.configure(latency_s=0.5, fault_rate=0.0)
    requests, root, namespace = first["requests"], first["root"], first["replay_namespace"]
    before = env.server_total()
    result = asyncio.run(run_layer(env.server.base_url, requests, 64, root, namespace, load=True))
    reached = env.server_total() - before
    print(
        f"replay: {result['seconds']:.2f} s (load {result['load_seconds']:.2f} s), {reached} requests reached"
    )
    return {
        "reached_server": reached,
        "seconds": result["seconds"],
        "load_seconds": result["load_seconds"],
        "loaded_segments": result["loaded_segments"],
        "speedup": first["layer_seconds"] / result["seconds"],
        "store_hits": result["usage"].store_hits,
    }


def faults(env: Env, count: int, no_fault_layer_rps: float) -> dict[str, Any]:
    latency, concurrency = 0.5, 64
    env.server.configure(
        latency_s=latency,
        fault_rate=0.2,
        fault_kinds=("429", "500", "timeout", "truncated", "length"),
        timeout_sleep_s=5.0,
        seed=7,
    )
    requests = requests_for(count, "faults")
    root = s3_root(env.s3_endpoint, "faults")
    print(f"faults: {count} requests, 20% faults, {latency * 1000:.0f} ms latency, concurrency {concurrency}")
    env.server.reset()
    bare = asyncio.run(run_bare(env.server.base_url, requests, concurrency, timeout_s=2.0))
    print(f"    bare       {bare['rps']:8.1f} req/s, {bare['failed']} of {count} failed (no retries)")
    env.server.reset()
    layer = asyncio.run(run_layer(env.server.base_url, requests, concurrency, root, _ns(), timeout_s=2.0))
    stats = env.server.stats()
    usage = layer["usage"]
    print(f"    layer      {layer['rps']:8.1f} req/s, server saw {stats['total']}, faults {stats['faults']}")
    env.server.configure(fault_rate=0.0)
    return {
        "completed": usage.samples + usage.store_hits,
        "server_requests": stats["total"],
        "server_faults": stats["faults"],
        "layer_rps": layer["rps"],
        "of_no_fault": layer["rps"] / no_fault_layer_rps,
        "bare_failed": bare["failed"],
        "client_faults": dict(usage.failures),
        "retries": usage.retries,
    }


def crash(env: Env, count: int, lose_disk: bool = False) -> dict[str, Any]:
    latency, concurrency = 0.1, 64
    env.server.configure(latency_s=latency, fault_rate=0.0)
    env.server.reset()
    args = {
        "base_url": env.server.base_url,
        "s3_endpoint": env.s3_endpoint,
        "namespace": _ns(),
        "count": count,
        "concurrency": concurrency,
        "transport": TRANSPORT,
    }
    cmd = [sys.executable, __file__, "--crash-child", json.dumps(args)]
    print(f"crash: {count} requests, {latency * 1000:.0f} ms latency, concurrency {concurrency}")
    child = subprocess.Popen(cmd)
    while env.server_total() < count // 2:
        if child.poll() is not None:
            raise RuntimeError(f"crash child exited early with {child.returncode}")
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    at_kill = env.server_total()
    time.sleep(latency * 3)  # let the server count requests that were in flight
    seen_first = env.server_total()
    journal = Path(os.environ["SIGMA_JOURNAL_DIR"])
    unshipped = sum(len(f.read_bytes().splitlines()) for f in journal.glob("*/*.jsonl"))
    if lose_disk:  # the pod's disk went with it: only what was shipped to S3 is left
        shutil.rmtree(journal)
    rerun = subprocess.run(cmd, capture_output=True, text=True, check=True)
    child_report = json.loads(rerun.stdout.strip().splitlines()[-1])
    total = env.server_total()
    print(
        f"    killed at {at_kill} server requests; {unshipped} answers not yet shipped"
        f"{' (lost with the disk)' if lose_disk else ''}; rerun loaded {child_report['loaded']}; "
        f"total {total}"
    )
    return {
        "killed_at": at_kill,
        "unshipped_at_kill": unshipped,
        "first_run_requests": seen_first,
        "loaded_on_rerun": child_report["loaded"],
        "server_total": total,
        "paid_twice": total - count,
        "concurrency": concurrency,
    }


def crash_child(raw: str) -> None:
    args = json.loads(raw)
    global TRANSPORT
    TRANSPORT = args["transport"]
    root = s3_root(args["s3_endpoint"], "crash")

    async def main() -> dict[str, Any]:
        store = ResponseStore(root, args["namespace"])
        await asyncio.to_thread(store.load)
        loaded = len(store)
        backend = OpenAIBackend(
            MODEL, base_url=args["base_url"], max_connections=MAX_CONNECTIONS, transport=args["transport"]
        )
        client = LLMClient(backend, store, concurrency=args["concurrency"])
        await client.agenerate(requests_for(args["count"], "crash"))
        await client.aclose()
        return {"loaded": loaded, "requests": client.usage.requests}

    print(json.dumps(asyncio.run(main())), flush=True)


# -- report ---------------------------------------------------------------------------------------------


def report(results: dict[str, Any], quick: bool, seconds: float) -> str:
    t, o, r, f = (results[k] for k in ("throughput", "overhead", "replay", "faults"))
    c, lost = results["crash"], results["crash_disk_lost"]
    rows = [
        (
            f"Throughput (500 ms latency, concurrency 64, both on {TRANSPORT}, store on S3): "
            "layer req/s ÷ bare req/s",
            f"**{t['layer_of_bare']:.3f}**; as a share of the bound (64 ÷ 0.5 s = 128 req/s): layer "
            f"{t['layer_of_ideal']:.3f}, bare {t['bare_of_ideal']:.3f}; the store without the journal "
            f"(durable on S3 before the slot is freed): {t['unjournaled_of_bare']:.3f} of bare, "
            f"{t['unjournaled_of_ideal']:.3f} of the bound",
            "≥ 1.0",
        ),
        (
            f"Overhead (10 ms latency, concurrency 256, both on {TRANSPORT}): layer req/s ÷ bare req/s, "
            "store on S3",
            f"**{o['layer_of_bare']:.3f}** ({o['layer_rps']:.0f} vs {o['bare_rps']:.0f} req/s); without the "
            f"journal {o['unjournaled_of_bare']:.3f}; bare + PUT per response {o['bare_put_of_bare']:.3f}; "
            f"bare on httpx {o['bare_httpx_rps']:.0f} req/s",
            "≥ 0.9",
        ),
        (
            "Replay (fresh client, reloaded store): requests reaching the server; speed-up",
            f"{r['reached_server']} requests; {r['speedup']:.1f}× faster "
            f"({r['seconds']:.2f} s, load {r['load_seconds']:.2f} s of {r['loaded_segments']} segments)",
            "0",
        ),
        (
            "Faults (20%: 429, 500, timeout, truncated, length): completed; server requests; "
            "req/s ÷ no-fault",
            f"{f['completed']} completed; server saw {f['server_requests']}; {f['of_no_fault']:.3f} "
            f"(bare without retries: {f['bare_failed']} failed)",
            "all complete",
        ),
        (
            "Crash (SIGKILL half way, rerun on the same disk; 100 ms latency, concurrency 64): "
            "requests paid twice",
            f"**{c['paid_twice']}** (killed at {c['killed_at']} server requests; "
            f"{c['unshipped_at_kill']} answers were only in the journal and were replayed)",
            f"≤ {c['concurrency']}",
        ),
        (
            "Crash with the disk lost too (the journal deleted before the rerun): requests paid twice",
            f"**{lost['paid_twice']}** ({lost['unshipped_at_kill']} answers not yet shipped were lost)",
            f"≤ {lost['concurrency']} + the unshipped answers",
        ),
    ]
    lines = [
        "| figure | measured | target |",
        "| --- | --- | --- |",
        *(f"| {a} | {b} | {c_} |" for a, b, c_ in rows),
        "",
        f"{'Quick run' if quick else 'Full run'} in {seconds:.0f} s.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and repetitions")
    parser.add_argument("--crash-child", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the raw figures to this file")
    parser.add_argument("--transport", choices=("aiohttp", "httpx"), default="aiohttp")
    args = parser.parse_args()
    global TRANSPORT
    TRANSPORT = args.transport
    if args.crash_child:
        crash_child(args.crash_child)
        return
    os.environ["AWS_ALLOW_HTTP"] = "true"
    journal_dir = tempfile.TemporaryDirectory(prefix="bench-journal-")
    os.environ["SIGMA_JOURNAL_DIR"] = journal_dir.name  # the crash child inherits it
    from local_s3 import local_s3

    count = 400 if args.quick else 2000
    reps = 1 if args.quick else 2
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp,
        local_s3(Path(tmp), S3_KEY, S3_SECRET) as endpoint,
    ):
        import s3fs

        s3fs.S3FileSystem(key=S3_KEY, secret=S3_SECRET, client_kwargs={"endpoint_url": endpoint}).mkdir(
            BUCKET
        )
        with FaultServerProcess(FaultConfig(model=MODEL)) as server:
            env = Env(server, endpoint, args.quick)
            results: dict[str, Any] = {}
            results["throughput"] = throughput(env, count, reps)
            results["replay"] = replay(env, results["throughput"])
            results["overhead"] = overhead(env, 2 * count, max(1, reps - 1))  # CPU-bound: long runs
            results["faults"] = faults(env, count, results["throughput"]["layer_rps"])
            results["crash"] = crash(env, count)
            results["crash_disk_lost"] = crash(env, count, lose_disk=True)
    table = report(results, args.quick, time.perf_counter() - started)
    print(table)
    if args.json:
        clean = {
            k: {kk: vv for kk, vv in v.items() if kk not in ("requests", "root")} for k, v in results.items()
        }
        Path(args.json).write_text(json.dumps(clean, indent=2, default=str))


if __name__ == "__main__":
    main()
