"""A rehearsal of the paper's run: the whole graph, through the code location of `workspace.yaml`, on a
real S3 server (SeaweedFS), over N problems at 2 temperatures, the policy and the critic played by the
simulated server (`sigma_assets/testing/simulated_server.py`), at the paper's settings (n = 3, depth 16,
16 simulations, one path critique and one path revision per problem).

    nice -n 10 .venv/bin/python bench/bench_rehearsal.py --problems 48 96 192 384 --base-model bundled \
        --train-steps 2 --write docs/benchmarks.md
    .venv/bin/python bench/bench_rehearsal.py --env my.env --problems 128 --full-problems 7500
    .venv/bin/python bench/bench_rehearsal.py --problems 768 --report-from earlier.json --json all.json

Per size, a fresh Dagster instance and storage prefix; every run is launched from the code location's
snapshot, as the UI's Materialize does, and executed in one project process (as `run_main` does), in the
main order: `problems_job` per shard, `generation_job` per (shard, temperature), `training_job` per
variant, `evaluation_job` (through the same server). The project process measures each step: CPU seconds
of the process itself and of its children (the answer checker's math-verify worker, the trainer), wall
seconds, peak memory, and the objects and bytes it left on the storage root; the simulated server (its
own process, never counted) counts requests, tokens and the seconds a real server would have taken.

`--env FILE` reads a user's settings (`KEY=VALUE` lines, what the code location reads from the
environment): their problems (the first N), temperatures, shard size, policy and critic models, critic
concurrency; storage, servers and keys are always the rehearsal's own. The report says how many
requests, tokens, dollars and hours the full run (`--full-problems`, default: every problem of the
source) takes at the stated policy-server speed and critic prices. `--report-from` joins sizes kept by
`--json` to those run now; `--profile` profiles the project process and the LLM client's loop thread.
Growth is fitted per figure by least squares; whatever does not grow with the problems stays fixed.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import math
import os
import pstats
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "infra"))
sys.path.insert(0, str(REPO))

HEADING = "## Rehearsal at paper scale"
FINDINGS = "### What the rehearsal found"  # a rewrite of the section keeps this part
S3_KEY, S3_SECRET = "rehearsal", "rehearsal-secret"
BUCKET = "rehearsal"
POLICY_MODEL = "qwen2.5-math-7b-instruct"  # any name but the bundled one gets the paper's search budget
PAPER_PROBLEMS = 7_500
DEFAULT_SIZES = [48, 96, 192]
PAPER_SAMPLES = 30_000
PAPER_USD_PER_15K = 11.7  # GPT-4o-mini, the paper's critic spend per 15K refined samples
PAPER_TOKENS_PER_SAMPLE = (2_200, 760)  # prompt, completion
# Each step's stage, by the asset its step materialises or checks (longest name first).
STAGES = {
    "raw_problems": "problems",
    "mcts_trees": "search",
    "sibling_sets": "sibling sets",
    "critiques": "critique",
    "refined_paths": "revision",
    "sft_dataset": "SFT build",
    "finetuned_model": "training",
    "eval_scores": "evaluation",
}
STAGE_ORDER = [*STAGES.values(), "orchestration"]
RUN_CONFIG = {
    "loggers": {"console": {"config": {"log_level": "WARNING"}}},
    "execution": {"config": {"in_process": {}}},
}
# Settings a user's file may set; the rest (storage, servers, keys) are the rehearsal's own.
USER_SETTINGS = (
    "SIGMA_PROBLEMS", "SIGMA_NUM_SHARDS", "SIGMA_TEMPERATURES", "SIGMA_POLICY_MODEL",
    "SIGMA_POLICY_TOKENIZER", "SIGMA_POLICY_CONCURRENCY",
    "SIGMA_CRITIC_MODEL", "SIGMA_CRITIC_CONCURRENCY", "SIGMA_CRITIC_BATCH_API", "SIGMA_MAX_USD_PER_RUN",
    "SIGMA_EVAL_SETS", "SIGMA_TRAINING_PROFILE",
)  # fmt: skip


# -- the project process ------------------------------------------------------------------------------


def cpu_now() -> tuple[float, float]:
    """(this process, its reaped children) CPU seconds."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def peak_rss_kb() -> int:
    match = re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text())
    return int(match.group(1)) if match else 0


def reset_peak_rss() -> None:
    with contextlib.suppress(OSError):  # Linux only: the peak is then per step, not per process
        Path("/proc/self/clear_refs").write_text("5")


class StorageLedger:
    """What the storage root holds, listed after each step: objects and bytes that step wrote."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        from upath import UPath

        self.root = UPath(url, **options)
        self.fs = self.root.fs
        self.prefix = str(self.root.path).rstrip("/")
        self.seen: dict[str, int] = {}

    def listing(self) -> dict[str, int]:
        self.fs.invalidate_cache()
        try:
            found = self.fs.find(self.prefix, detail=True)
        except FileNotFoundError:
            return {}
        return {k: int(v.get("size") or 0) for k, v in found.items() if v.get("type") != "directory"}

    def step(self) -> tuple[int, int]:
        now = self.listing()
        written = {k: s for k, s in now.items() if self.seen.get(k) != s}
        self.seen = now
        return len(written), sum(written.values())

    def by_top(self) -> dict[str, list[int]]:
        """Objects and bytes now on the root, by their first two path parts (`assets/mcts_trees`)."""
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for key, size in self.seen.items():
            parts = key[len(self.prefix) + 1 :].split("/")
            top = "/".join(parts[:2])
            totals[top][0] += 1
            totals[top][1] += size
        return dict(totals)


def stage_of(step_key: str) -> str:
    for asset in sorted(STAGES, key=len, reverse=True):
        if step_key.startswith(asset):
            return STAGES[asset]
    return "orchestration"


def job_run_config(job: str, spec: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(json.dumps(RUN_CONFIG))
    if job == "training_job" and spec.get("train_steps"):
        config["ops"] = {"finetuned_model": {"config": {"max_steps": spec["train_steps"]}}}
    if job == "evaluation_job":
        # Evaluation through the same server: the resource's `openai` backend, set for this run.
        config["resources"] = {
            "evaluation": {
                "config": {
                    "eval_sets": os.environ.get("SIGMA_EVAL_SETS", ""),
                    "backend": "openai",
                    "base_url": spec["base_url"],
                }
            }
        }
        config["ops"] = {"eval_scores": {"config": {"max_tokens": spec["eval_max_tokens"]}}}
    return config


def materialization_metadata(instance: Any, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    import dagster as dg

    out = []
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        m = record.asset_materialization
        if m is not None:
            values = {}
            for name, value in m.metadata.items():
                raw = getattr(value, "value", value)
                if isinstance(raw, int | float | str | bool) or raw is None or isinstance(raw, dict | list):
                    values[name] = raw
            out.append((m.asset_key.to_user_string(), values))
    return out


def profile_client_loop() -> cProfile.Profile:
    """A profiler of what runs on `LLMClient`'s event loop (its own thread, out of the main profiler's
    sight): each coroutine it is given runs with the profiler on in that thread."""
    from sigma_assets.llm.client import LLMClient

    loop_profiler, original = cProfile.Profile(), LLMClient._run

    def _run(self: Any, coroutine: Any) -> Any:
        async def profiled() -> Any:
            loop_profiler.enable()
            try:
                return await coroutine
            finally:
                loop_profiler.disable()

        return original(self, profiled())

    LLMClient._run = _run  # type: ignore[method-assign]
    return loop_profiler


def run_project(spec_path: Path) -> None:
    """Every run of the graph in this process, each step measured; writes the figures to spec["out"]."""
    spec = json.loads(spec_path.read_text())
    started_wall = time.monotonic()
    cpu_start = cpu_now()
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import dagster as dg
    from dagster._core.execution.api import execute_run_iterator
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster._utils.hosted_user_process import recon_job_from_origin

    from sigma_assets.definitions import defs
    from sigma_assets.run_main import launch, quiet_libraries

    quiet_libraries()
    profiler = cProfile.Profile() if spec.get("profile") else None
    loop_profiler = profile_client_loop() if profiler else None
    from sigma_assets.data.storage import StorageRoot

    storage = StorageRoot(
        url=os.environ["SIGMA_STORAGE_URL"],
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL"),
        region=os.environ.get("AWS_REGION"),
        access_key_id=os.environ.get("AWS_ACCESS_KEY_ID"),
        secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
    )
    ledger = StorageLedger(storage.url, storage.storage_options)
    instance = dg.DagsterInstance.get()
    steps: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    metadata: list[tuple[str, str | None, str, dict[str, Any]]] = []
    failed: list[str] = []
    import_cpu = cpu_now()
    with WorkspaceProcessContext(
        instance, WorkspaceFileTarget(paths=[str(REPO / "workspace.yaml")]), code_server_log_level="WARNING"
    ) as process:
        context = process.create_request_context()
        error = context.get_code_location_error("sigma")
        if error:
            raise SystemExit(f"the code location does not load:\n{error.to_string()}")
        repository = next(iter(context.get_code_location("sigma").get_repositories().values()))
        for job_name in ("problems_job", "generation_job", "training_job", "evaluation_job"):
            job = defs.resolve_job_def(job_name)
            remote_job = repository.get_full_job(job_name)
            keys = list(job.partitions_def.get_partition_keys()) if job.partitions_def else [None]
            for key in keys:
                run_started = time.monotonic()
                run = launch(instance, context, remote_job, key, job_run_config(job_name, spec))
                recon = recon_job_from_origin(run.job_code_origin)
                current: dict[str, Any] | None = None
                mark = cpu_now()
                wall_mark = time.monotonic()
                if profiler:
                    profiler.enable()
                for event in execute_run_iterator(recon, run, instance):
                    kind = event.event_type
                    if kind == dg.DagsterEventType.STEP_START:
                        if profiler:
                            profiler.disable()
                        reset_peak_rss()
                        mark, wall_mark = cpu_now(), time.monotonic()
                        if profiler:
                            profiler.enable()
                        current = {"step": event.step_key, "stage": stage_of(str(event.step_key))}
                    elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
                        if profiler:
                            profiler.disable()
                        now, wall = cpu_now(), time.monotonic()
                        assert current is not None
                        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
                        objects, written = ledger.step()  # listed after the step's figures are taken
                        current |= {
                            "job": job_name,
                            "partition": key,
                            "run_id": run.run_id,
                            "ok": kind == dg.DagsterEventType.STEP_SUCCESS,
                            "cpu_self_s": now[0] - mark[0],
                            "cpu_children_s": now[1] - mark[1],
                            "wall_s": wall - wall_mark,
                            "peak_rss_kb": peak_rss_kb(),
                            "children_max_rss_kb": children,
                            "objects_written": objects,
                            "bytes_written": written,
                        }
                        steps.append(current)
                        current = None
                        if profiler:
                            profiler.enable()
                if profiler:
                    profiler.disable()
                finished = instance.get_run_by_id(run.run_id)
                events = len(instance.all_logs(run.run_id))
                ok = finished is not None and finished.status == dg.DagsterRunStatus.SUCCESS
                runs.append(
                    {
                        "job": job_name,
                        "partition": key,
                        "run_id": run.run_id,
                        "ok": ok,
                        "events": events,
                        "wall_s": time.monotonic() - run_started,
                    }
                )
                metadata += [(job_name, key, a, m) for a, m in materialization_metadata(instance, run.run_id)]
                label = f"{job_name} {key or ''}".strip()
                print(
                    f"  {label}: {'ok' if ok else 'FAILED'} in {time.monotonic() - run_started:.1f} s",
                    flush=True,
                )
                if not ok:
                    failed.append(label)
            if failed:
                break
    cpu_end = cpu_now()
    home = Path(os.environ["DAGSTER_HOME"])
    instance_bytes = sum(p.stat().st_size for p in home.rglob("*") if p.is_file())
    result = {
        "steps": steps,
        "runs": runs,
        "metadata": metadata,
        "failed": failed,
        "cpu_total_self_s": cpu_end[0] - cpu_start[0],
        "cpu_total_children_s": cpu_end[1] - cpu_start[1],
        "cpu_import_s": import_cpu[0] - cpu_start[0],
        "wall_s": time.monotonic() - started_wall,
        "instance_bytes": instance_bytes,
        "storage_by_top": ledger.by_top(),
        "storage_objects": len(ledger.seen),
        "storage_bytes": sum(ledger.seen.values()),
        "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "policy_concurrency": getattr(defs.resources.get("policy"), "concurrency", None),
    }
    if profiler:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(45)
        result["profile"] = out.getvalue()
        out = io.StringIO()  # the client's event loop (the search's own work), a thread of its own
        loop_stats = pstats.Stats(loop_profiler, stream=out)
        loop_stats.sort_stats("tottime").print_stats(40)
        loop_stats.sort_stats("cumulative").print_stats(40)
        result["profile_client_loop"] = out.getvalue()
    Path(spec["out"]).write_text(json.dumps(result))


# -- the driver ---------------------------------------------------------------------------------------


def read_env_file(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            name = name.removeprefix("export ").strip()
            values[name] = value.strip().strip("'\"")
    return values


def user_problems(source: str | None, limit: int) -> tuple[list[dict[str, str]], int]:
    """The first `limit` problems of the user's source as the code location reads them (and how many
    the source has), or the rehearsal's own problems of real length."""
    from sigma_assets.testing.simulated_policy import rehearsal_problems

    if source is None:
        return rehearsal_problems(limit), PAPER_PROBLEMS
    from sigma_assets.data.problems import load_problems

    loaded = load_problems(source)
    rows = [{"problem_id": p.problem_id, "problem": p.problem, "answer": p.answer} for p in loaded.problems]
    return rows[:limit], len(rows)


def prices(model: str, given: list[float] | None) -> tuple[float, float]:
    from sigma_assets.llm.accounting import price_of

    return (given[0], given[1]) if given else price_of(model)


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def rehearse(
    size: int,
    problems: list[dict[str, str]],
    args: argparse.Namespace,
    user: dict[str, str],
    endpoint: str,
    server: Any,
    work: Path,
) -> dict[str, Any]:
    """One size: a fresh instance and prefix, the project process, the server's counts."""
    import s3fs

    tag = f"size-{size}-{uuid.uuid4().hex[:6]}"
    fs = s3fs.S3FileSystem(key=S3_KEY, secret=S3_SECRET, client_kwargs={"endpoint_url": endpoint})
    local = work / f"{tag}.jsonl"
    write_jsonl(local, problems[:size])
    fs.put_file(str(local), f"{BUCKET}/inputs/{tag}.jsonl")  # the problems on the storage server too
    home = work / tag / "home"
    home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    shards = max(1, math.ceil(size / args.problems_per_shard))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGMA_", "AWS_", "OPENAI_"))}
    env |= {k: v for k, v in user.items() if k in USER_SETTINGS}
    env |= {
        "DAGSTER_HOME": str(home),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "SIGMA_STORAGE_URL": f"s3://{BUCKET}/{tag}",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
        "SIGMA_PROBLEMS": f"s3://{BUCKET}/inputs/{tag}.jsonl",
        "SIGMA_NUM_SHARDS": str(shards),
        "SIGMA_POLICY_BACKEND": "openai",
        "SIGMA_POLICY_BASE_URL": server.base_url,
        "SIGMA_POLICY_API_KEY": "EMPTY",
        "SIGMA_CRITIC_BACKEND": "openai",
        "SIGMA_CRITIC_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "rehearsal",
        "SIGMA_JOURNAL_DIR": str(work / tag / "journal"),
        "SIGMA_BASE_MODEL": args.base_model_dir,
    }
    env.setdefault("SIGMA_POLICY_MODEL", POLICY_MODEL)
    env.setdefault("SIGMA_CRITIC_MODEL", "gpt-4o-mini")
    env["SIGMA_CRITIC_BATCH_API"] = (
        "false"  # the simulated critic answers online; batch prices are halved below
    )
    spec = {
        "out": str(work / tag / "figures.json"),
        "base_url": server.base_url,
        "eval_max_tokens": args.eval_max_tokens,
        "train_steps": args.train_steps,
        "profile": args.profile,
    }
    (work / tag / "spec.json").write_text(json.dumps(spec))
    server.reset()
    print(f"{size} problems, {shards} shards: running", flush=True)
    load_before = os.getloadavg()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--project", str(work / tag / "spec.json")],
        cwd=REPO, env=env, text=True, stdout=sys.stdout, stderr=subprocess.PIPE,
    )  # fmt: skip
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"the project process failed ({done.returncode}):\n{done.stderr[-6000:]}")
    figures = json.loads(Path(spec["out"]).read_text())
    figures |= {
        "size": size,
        "shards": shards,
        "server": server.stats(),
        "process_wall_s": wall,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "env": {
            k: env[k] for k in ("SIGMA_POLICY_MODEL", "SIGMA_CRITIC_MODEL", "SIGMA_TEMPERATURES") if k in env
        },
        "temperatures": (env.get("SIGMA_TEMPERATURES") or "0.4,0.7").split(","),
        "critic_concurrency": int(env.get("SIGMA_CRITIC_CONCURRENCY") or 16),
        "batch_api": user.get("SIGMA_CRITIC_BATCH_API", "false").lower() == "true",
    }
    if done.stderr.strip() and args.verbose:
        print(done.stderr[-4000:], file=sys.stderr)
    return figures


# -- figures -------------------------------------------------------------------------------------------


def stage_table(figures: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per stage: CPU of the project process and of its children, wall, peak memory, objects, bytes;
    `orchestration` is what the process spent outside steps (launching runs, writing events, the code
    server)."""
    table: dict[str, dict[str, float]] = {s: defaultdict(float) for s in STAGE_ORDER}
    for step in figures["steps"]:
        row = table[step["stage"]]
        row["cpu_self_s"] += step["cpu_self_s"]
        row["cpu_children_s"] += step["cpu_children_s"]
        row["wall_s"] += step["wall_s"]
        row["peak_rss_mb"] = max(row["peak_rss_mb"], step["peak_rss_kb"] / 1024)
        row["objects"] += step["objects_written"]
        row["bytes"] += step["bytes_written"]
    orchestration = table["orchestration"]
    orchestration["cpu_self_s"] += figures["cpu_total_self_s"] - sum(
        s["cpu_self_s"] for s in figures["steps"]
    )
    orchestration["cpu_children_s"] += figures["cpu_total_children_s"] - sum(
        s["cpu_children_s"] for s in figures["steps"]
    )
    orchestration["wall_s"] += figures["wall_s"] - sum(s["wall_s"] for s in figures["steps"])
    return {k: dict(v) for k, v in table.items()}


def meta_values(figures: dict[str, Any], asset: str, name: str, key: str | None = None) -> list[float]:
    """A numeric metadata value of `asset` per materialisation (of partition `key`, if given)."""
    return [
        v[name]
        for _, k, a, v in figures["metadata"]
        if a == asset and (key is None or k == key)
        and isinstance(v.get(name), int | float) and not isinstance(v.get(name), bool)
    ]  # fmt: skip


def model_figures(figures: dict[str, Any], critic_price: tuple[float, float]) -> dict[str, float]:
    """What the server saw (requests, tokens, seconds a real server takes), beside what the project
    counted in its metadata, and the critic's spend at `critic_price` (USD per 1M prompt, completion)."""
    kinds = figures["server"]["kinds"]

    def total(names: tuple[str, ...], field: str) -> float:
        return sum(kinds[k][field] for k in names)

    policy, critic = ("step", "rollout"), ("critique", "revision")
    usd = (
        total(critic, "prompt_tokens") * critic_price[0]
        + total(critic, "completion_tokens") * critic_price[1]
    ) / 1e6
    fields = ("requests", "prompt_tokens", "completion_tokens", "service_s", "sequence_s")
    out = {f"policy_{f}": total(policy, f) for f in (*fields, "samples", "length_cut")}
    out |= {f"critic_{f}": total(critic, f) for f in fields}
    out |= {f"eval_{f}": total(("eval",), f) for f in fields}

    def meta(asset: str, name: str, key: str | None = None) -> float:
        return sum(meta_values(figures, asset, name, key))

    out |= {
        "critic_usd": usd * (0.5 if figures.get("batch_api") else 1.0),
        "project_policy_requests": meta("mcts_trees", "policy_requests"),
        "project_policy_completion_tokens": meta("mcts_trees", "policy_completion_tokens"),
        "project_critic_requests": sum(meta(a, "critic_requests") for a in CRITIC_ASSETS),
        "project_critic_tokens": sum(
            meta(a, f"critic_{f}_tokens") for a in CRITIC_ASSETS for f in ("prompt", "completion")
        ),
        "project_critic_usd": sum(meta(a, "critic_cost_usd") for a in CRITIC_ASSETS),
        "peak_requests_in_flight": max(
            meta_values(figures, "mcts_trees", "peak_requests_in_flight"), default=0
        ),
        "trees": meta("mcts_trees", "trees"),
        "nodes": meta("mcts_trees", "nodes"),
        "solved": meta("mcts_trees", "solved"),
        "refined_paths": meta("refined_paths", "dagster/row_count"),
        "sigma_samples": meta("sft_dataset", "samples", "sigma"),
        "mcts_samples": meta("sft_dataset", "samples", "mcts"),
        "problems_kept": meta("raw_problems", "dagster/row_count"),
    }  # fmt: skip
    return out


CRITIC_ASSETS = ("critiques", "refined_paths")


class Growth:
    """How a figure grows with the problems n: `k`, the least-squares slope of log y on log n (1 linear,
    2 quadratic; a fixed part, such as imports or a model's weights, pulls it below 1), the per-problem
    steps between consecutive sizes (equal when linear, rising when faster), and the least-squares line
    y = a + b·n that projects it. Above k = 1.15 it is projected along n^k from the largest size."""

    SUPERLINEAR = 1.15

    def __init__(self, xs: list[float], ys: list[float]) -> None:
        self.xs, self.ys = xs, ys
        self.steps = [(y2 - y1) / (x2 - x1) for x1, x2, y1, y2 in zip(xs, xs[1:], ys, ys[1:], strict=False)]
        pairs = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
        self.k = _slope(pairs) if len(pairs) == len(xs) >= 2 else None
        if len(xs) == 1:
            self.a, self.b = 0.0, ys[0] / xs[0]
        else:
            self.b = max(0.0, _slope(list(zip(xs, ys, strict=True))) or 0.0)
            self.a = sum(ys) / len(ys) - self.b * sum(xs) / len(xs)

    @property
    def superlinear(self) -> bool:
        return self.k is not None and self.k > self.SUPERLINEAR

    def at(self, x: float) -> float:
        if self.superlinear:
            return self.ys[-1] * (x / self.xs[-1]) ** (self.k or 1.0)
        return max(0.0, self.a + self.b * x)

    def marginal(self) -> float:
        """What one more problem adds at the largest size."""
        if self.superlinear:
            return (self.k or 1.0) * self.ys[-1] / self.xs[-1]
        return self.b

    def label(self) -> str:
        return "–" if self.k is None else f"{self.k:.2f}" + (" ▲" if self.superlinear else "")


def _slope(points: list[tuple[float, float]]) -> float | None:
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    var = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / var if var else None


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


# The stages' CPU, with how it is read: the project process (`self`) and its children (the answer
# checker's math-verify worker; the trainer for training). FIXED: does not grow with the problems.
CPU_ROWS = (
    ("search", "search", ("cpu_self_s",)),
    ("answer checks (the search's math-verify worker)", "search", ("cpu_children_s",)),
    ("sibling sets", "sibling sets", ("cpu_self_s", "cpu_children_s")),
    ("critique", "critique", ("cpu_self_s", "cpu_children_s")),
    ("revision (with its answer checks)", "revision", ("cpu_self_s", "cpu_children_s")),
    ("SFT build (both variants)", "SFT build", ("cpu_self_s", "cpu_children_s")),
    ("problems (load, vet answers)", "problems", ("cpu_self_s", "cpu_children_s")),
    ("orchestration (launch runs, events, code server)", "orchestration", ("cpu_self_s", "cpu_children_s")),
    ("evaluation (3 models, the fixed eval sets)", "evaluation", ("cpu_self_s", "cpu_children_s")),
    ("training (fixed steps)", "training", ("cpu_self_s", "cpu_children_s")),
)
FIXED = ("evaluation", "training")  # their work is set by the eval sets and the steps, not the problems
STORAGE_STAGES = (
    "problems",
    "search",
    "sibling sets",
    "critique",
    "revision",
    "SFT build",
    "training",
    "evaluation",
)


def stage_cpu(table: dict[str, dict[str, float]], stage: str, fields: tuple[str, ...]) -> float:
    return sum(table[stage].get(f, 0.0) for f in fields)


def graph_cpu(table: dict[str, dict[str, float]]) -> float:
    """The project's own CPU, training left out (the real run trains on a GPU)."""
    return sum(stage_cpu(table, s, ("cpu_self_s", "cpu_children_s")) for s in STAGE_ORDER if s != "training")


def build_report(
    results: list[dict[str, Any]],
    args: argparse.Namespace,
    full: int,
    critic_model: str,
    critic_price: tuple[float, float],
    latency: Any,
) -> dict[str, Any]:
    from sigma_assets.testing.latency_model import projected_wall_s

    sizes = [r["size"] for r in results]
    tables = [stage_table(r) for r in results]
    models = [model_figures(r, critic_price) for r in results]
    temps = results[-1]["temperatures"]
    cmd = " ".join(map(str, sizes))
    lines = [
        HEADING,
        "",
        f"Command: `nice -n 10 .venv/bin/python bench/bench_rehearsal.py --problems {cmd} "
        f"{f'--problems-per-shard {args.problems_per_shard} ' if args.shard_given else ''}"
        f"--base-model {args.base_model}"
        f"{f' --train-steps {args.train_steps}' if args.train_steps else ''} --write docs/benchmarks.md` "
        "(`--env FILE` rehearses your own settings, `--json FILE` keeps every figure, `--profile` adds a "
        "cProfile of the project process). Each size is a fresh Dagster instance and storage prefix on a "
        "real S3 server (SeaweedFS); every run is launched from the code location of `workspace.yaml` and "
        "executed in one project process, in the main order (`problems_job` per shard, `generation_job` per "
        "shard × temperature, `training_job` per variant, `evaluation_job`). The policy and the critic are "
        "the simulated server (`sigma_assets/testing/simulated_server.py`, its own process, never counted): "
        "steps drawn from real MATH solutions, a final answer at each depth as often as real solutions end "
        f"there, right with a per-problem chance (mean {args.accuracy:g}), the path critique's JSON and the "
        "path revision from the critic, token counts in `usage`, answers at once with the seconds a real "
        "server would take added up. The paper's search: n = 3, depth 16, 16 simulations; temperatures "
        f"{', '.join(temps)}; {args.problems_per_shard} problems per shard; training: "
        f"{f'{args.train_steps} optimizer steps' if args.train_steps else 'the cpu profile'} of the "
        f"{'bundled SmolLM2-135M' if args.base_model == 'bundled' else args.base_model} model; evaluation "
        "of the base model and both fine-tunes through the same server. CPU is `getrusage` of the project "
        "process and of its children, per step. Load average (1 min) before → after: "
        + ", ".join(f"{r['size']}: {r['load_before'][0]:.1f} → {r['load_after'][0]:.1f}" for r in results)
        + ".",
        "",
        "Growth k: the least-squares slope of log y on log n over the sizes (1 linear, 2 quadratic; a "
        "fixed part pulls it below 1; ▲ above 1.15). Per problem: what each added problem cost between "
        "one size and the next (equal steps: linear; rising: faster than linear).",
        "",
        "| figure | "
        + " | ".join(f"{n} problems" for n in sizes)
        + " | growth k | per problem, size to size |",
        "|---" * (len(sizes) + 3) + "|",
    ]
    growths: dict[str, Growth] = {}

    def row(name: str, values: list[float], digits: int = 1, per: int = 3) -> Growth:
        growth = Growth(sizes, values)
        growths[name] = growth
        shown = " | ".join(_fmt(v, digits) for v in values)
        steps = " → ".join(_fmt(v, per) for v in growth.steps) or _fmt(growth.b, per)
        lines.append(f"| {name} | {shown} | {growth.label()} | {steps} |")
        return growth

    row("(problem, temperature) trees", [m["trees"] for m in models], 0, 2)
    row("Dagster runs", [len(r["runs"]) for r in results], 0, 3)
    row("Dagster events", [sum(x["events"] for x in r["runs"]) for r in results], 0, 1)
    row("wall s of the project process", [r["wall_s"] for r in results], 0, 2)
    for label, stage, fields in CPU_ROWS:
        row(f"CPU s: {label}", [stage_cpu(t, stage, fields) for t in tables], 1, 3)
    cpu_graph = row("CPU s: all but training", [graph_cpu(t) for t in tables], 1, 3)
    search_memory = row(
        "peak memory MB: search step", [t["search"].get("peak_rss_mb", 0) for t in tables], 0, 3
    )
    row("peak memory MB: SFT build step", [t["SFT build"].get("peak_rss_mb", 0) for t in tables], 0, 3)
    row(
        "peak memory MB: any step",
        [max(t[s].get("peak_rss_mb", 0) for s in STAGES.values()) for t in tables],
        0,
        3,
    )
    row(
        "peak memory MB: children (trainer)",
        [r["steps"][-1]["children_max_rss_kb"] / 1024 for r in results],
        0,
        3,
    )
    for stage in STORAGE_STAGES:
        row(f"objects written: {stage}", [t[stage].get("objects", 0) for t in tables], 0, 3)
        row(f"MB written: {stage}", [t[stage].get("bytes", 0) / 1e6 for t in tables], 1, 4)
    storage = row("storage root at the end, MB", [r["storage_bytes"] / 1e6 for r in results], 0, 3)
    row("Dagster instance on disk, MB", [r["instance_bytes"] / 1e6 for r in results], 1, 4)
    policy_requests = row("policy requests", [m["policy_requests"] for m in models], 0, 1)
    row("policy completion tokens", [m["policy_completion_tokens"] for m in models], 0, 0)
    row("tree nodes", [m["nodes"] for m in models], 0, 1)
    row("solved trees", [m["solved"] for m in models], 0, 2)
    row("critic requests", [m["critic_requests"] for m in models], 0, 2)
    row(
        "critic prompt + completion tokens",
        [m["critic_prompt_tokens"] + m["critic_completion_tokens"] for m in models],
        0,
        0,
    )
    refined = row("refined paths", [m["refined_paths"] for m in models], 0, 2)
    samples = row(
        "SFT samples (sigma; a held-out slice from 200 problems)", [m["sigma_samples"] for m in models], 0, 2
    )
    row("evaluation requests", [m["eval_requests"] for m in models], 0, 2)
    lines.append("")

    # -- the full run --
    def at_full(values: list[float]) -> float:
        return Growth(sizes, values).at(full)

    # The policy client keeps at most `concurrency` requests on the wire (the policy resource's); the
    # server decodes `capacity` sequences at once. `full_batch` requests in flight would fill its batch.
    policy_service = at_full([m["policy_service_s"] for m in models])
    policy_sequence = at_full([m["policy_sequence_s"] for m in models])
    concurrency = int(results[-1].get("policy_concurrency") or 16)
    full_batch = max(concurrency, math.ceil(latency.capacity * policy_service / max(1e-9, policy_sequence)))
    policy_s = projected_wall_s(policy_service, policy_sequence, concurrency, latency.capacity)
    batch_s = projected_wall_s(policy_service, policy_sequence, full_batch, latency.capacity)
    waiting = int(models[-1]["peak_requests_in_flight"])
    critic_k = results[-1]["critic_concurrency"]
    critic_s = projected_wall_s(
        at_full([m["critic_service_s"] for m in models]), at_full([m["critic_sequence_s"] for m in models]),
        critic_k, 100_000,
    )  # fmt: skip
    full_requests = policy_requests.at(full)
    full_tokens = at_full([m["policy_completion_tokens"] for m in models])
    # The search's own loop and the whole graph (training left out), per policy request at the margin.
    search_growth = Growth(sizes, [stage_cpu(t, "search", ("cpu_self_s",)) for t in tables])
    per_request_search = search_growth.marginal() / max(1e-9, policy_requests.marginal())
    per_request_graph = cpu_graph.marginal() / max(1e-9, policy_requests.marginal())
    project_s = cpu_graph.at(full)
    outside_search = project_s - at_full(
        [stage_cpu(t, "search", ("cpu_self_s", "cpu_children_s")) for t in tables]
    )
    usd_full = at_full([m["critic_usd"] for m in models])
    # Per refined path (the paper's "refined samples"), at the margin.
    usd_per_sample = Growth(sizes, [m["critic_usd"] for m in models]).marginal() / max(
        1e-9, refined.marginal()
    )
    tokens_per_sample = [
        Growth(sizes, [m[f"critic_{f}_tokens"] for m in models]).marginal() / max(1e-9, refined.marginal())
        for f in ("prompt", "completion")
    ]
    paper_price = PAPER_TOKENS_PER_SAMPLE[0] * critic_price[0] + PAPER_TOKENS_PER_SAMPLE[1] * critic_price[1]
    rate = full_requests / policy_s if policy_s else 0.0
    batch_rate = full_requests / batch_s if batch_s else 0.0
    measured = (
        "measured" if sizes[-1] >= full else
        f"not run: projected from {', '.join(map(str, sizes))} problems along each figure's measured growth"
    )  # fmt: skip
    fixed_note = "what does not grow with the problems (evaluation, the models' weights) stays as measured"
    # Runs by the full run's partitions; each job's events per run as at the largest size.
    shards_full = math.ceil(full / args.problems_per_shard)
    runs_by_job = {"problems_job": shards_full, "generation_job": shards_full * len(temps)}
    events_per_run: dict[str, list[int]] = defaultdict(list)
    for run in results[-1]["runs"]:
        events_per_run[run["job"]].append(run["events"])
    runs_full = sum(runs_by_job.get(job, len(counts)) for job, counts in events_per_run.items())
    events_full = sum(
        runs_by_job.get(job, len(counts)) * sum(counts) / len(counts)
        for job, counts in events_per_run.items()
    )
    critic_tokens = at_full([m["critic_prompt_tokens"] + m["critic_completion_tokens"] for m in models])
    rest_s = critic_s + outside_search
    projected = [
        ("policy requests / completion tokens", f"{full_requests:,.0f} / {full_tokens:,.0f}"),
        (
            f"search hours at the project's policy concurrency ({concurrency} requests in flight)",
            f"**{policy_s / 3600:,.1f} h** ({rate:.1f} requests/s, {full_tokens / policy_s:,.0f} tokens/s)",
        ),
        (
            f"search hours with {full_batch} in flight (the server's batch full)",
            f"**{batch_s / 3600:,.1f} h** ({batch_rate:.1f} requests/s, "
            f"{full_tokens / batch_s:,.0f} tokens/s)",
        ),
        (
            "critic requests / prompt + completion tokens",
            f"{at_full([m['critic_requests'] for m in models]):,.0f} / {critic_tokens:,.0f}",
        ),
        ("critic hours", f"{critic_s / 3600:,.1f} h"),
        ("the project's own CPU outside the search, training left out", f"{outside_search / 3600:,.2f} h"),
        (
            "wall clock, training left out (search + critic + the rest)",
            f"**{(policy_s + rest_s) / 3600:,.1f} h** at {concurrency} in flight, "
            f"{(batch_s + rest_s) / 3600:,.1f} h at {full_batch}",
        ),
        ("critic spend, this run", f"**${usd_full:,.2f}**"),
        ("refined paths / SFT samples (sigma)", f"{refined.at(full):,.0f} / {samples.at(full):,.0f}"),
        (
            f"critic spend per 15K refined samples (the paper: ${PAPER_USD_PER_15K:.1f}) / per 30K",
            f"**${usd_per_sample * PAPER_SAMPLES / 2:,.2f}** / ${usd_per_sample * PAPER_SAMPLES:,.2f} "
            f"({tokens_per_sample[0]:,.0f} prompt + {tokens_per_sample[1]:,.0f} completion tokens "
            "per refined sample; the paper's 2,200 + 760 at these prices: "
            f"${15_000 * paper_price / 1e6:,.2f})",
        ),
        ("the project's own CPU, training left out", f"{project_s / 3600:,.2f} core-hours"),
        (
            f"peak memory of a search step ({min(full, args.problems_per_shard):,} problems a shard)",
            f"{search_memory.at(min(full, args.problems_per_shard)):,.0f} MB"
            if len(sizes) > 1 and max(r["shards"] for r in results) == 1
            else "– (needs two sizes or more, each in one shard)",
        ),
        (
            "storage root (models: the bundled one's weights; a 7B fine-tune is ~15 GB)",
            f"{storage.at(full) / 1e3:,.2f} GB",
        ),
        ("Dagster runs / events", f"{runs_full:,} / {events_full:,.0f}"),
    ]
    lines += [
        f"**The full run: {full:,} problems × {len(temps)} temperatures** ({measured}; {fixed_note}). "
        f"Policy server: {latency.ttft_s * 1000:.0f} ms to the first token, "
        f"{latency.tpot_s * 1000:.0f} ms per token per sequence, {latency.capacity} sequences at once "
        f"(`--policy-*`). The search had up to {waiting:,} requests waiting at {sizes[-1]} problems; the "
        f"policy client sends {concurrency} at a time (`SIGMA_POLICY_CONCURRENCY`). Critic {critic_model} at "
        f"${critic_price[0]:g} / ${critic_price[1]:g} per 1M prompt / completion tokens"
        f"{' (Batch API: half)' if results[-1]['batch_api'] else ''}, {critic_k} requests in flight.",
        "",
        "| figure | projected |",
        "| --- | --- |",
        *(f"| {name} | {value} |" for name, value in projected),
        "",
        "**The project's own overhead against a policy server doing R requests/s.** The project's CPU per "
        f"policy request at the margin: {per_request_search * 1000:.2f} ms on the search's own loop (answer "
        f"checks run in a worker of their own), {per_request_graph * 1000:.2f} ms for the whole graph less "
        "training. Nothing overlapped, its share of the wall clock is CPU / (CPU + 1/R) (the upper bound). "
        "The search's requests are in flight together, so its loop works while the server does, until the "
        f"loop is busy all the time (c·R = 1): at {1 / per_request_search:,.0f} requests/s the project, not "
        "the server, sets the pace.",
        "",
        "| R (requests/s) | search loop busy (c·R) | share, search loop, nothing overlapped | "
        "share, whole graph, nothing overlapped |",
        "| --- | --- | --- | --- |",
    ]
    for r in sorted({round(rate, 1), round(batch_rate, 1), *args.rates}):
        lines.append(
            f"| {r:g} | {100 * per_request_search * r:.1f} % | {_share(per_request_search, r)} | "
            f"{_share(per_request_graph, r)} |"
        )
    lines.append("")
    summary = {
        "sizes": sizes,
        "full": full,
        "growth": {name: {"a": g.a, "b": g.b, "k": g.k} for name, g in growths.items()},
        "policy_requests": full_requests,
        "policy_completion_tokens": full_tokens,
        "policy_hours": policy_s / 3600,
        "policy_requests_per_s": rate,
        "policy_hours_full_batch": batch_s / 3600,
        "policy_concurrency": concurrency,
        "full_batch_concurrency": full_batch,
        "critic_hours": critic_s / 3600,
        "critic_usd_full": usd_full,
        "critic_usd_per_15k": usd_per_sample * PAPER_SAMPLES / 2,
        "project_core_hours": project_s / 3600,
        "storage_bytes_full": storage.at(full) * 1e6,
        "cpu_s_per_policy_request_search": per_request_search,
        "cpu_s_per_policy_request_graph": per_request_graph,
        "models": models,
        "stages": tables,
    }
    return {"lines": lines, "summary": summary}


def _share(cpu_per_request: float, rate: float) -> str:
    return f"{100 * cpu_per_request / (cpu_per_request + 1 / rate):.1f} %"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, help=argparse.SUPPRESS)  # the project process itself
    parser.add_argument("--problems", type=int, nargs="+", help=f"sizes (default: {DEFAULT_SIZES})")
    parser.add_argument(
        "--report-from", type=Path, nargs="+", default=[], help="sizes kept by --json, reported with these"
    )
    parser.add_argument(
        "--problems-per-shard", type=int, help="default: the full run's (its SIGMA_NUM_SHARDS shards)"
    )
    parser.add_argument("--env", type=Path, help="a settings file (KEY=VALUE lines) to rehearse")
    parser.add_argument("--full-problems", type=int, help="problems of the real run (default: the source's)")
    parser.add_argument("--base-model", default="bundled", help="bundled (SmolLM2-135M), tiny, or a folder")
    parser.add_argument("--train-steps", type=int, default=0, help="optimizer steps (0: the profile's)")
    parser.add_argument("--eval-max-tokens", type=int, default=1024)
    parser.add_argument(
        "--policy-ttft", type=float, default=0.05, help="policy server: seconds to first token"
    )
    parser.add_argument("--policy-tpot", type=float, default=0.02, help="policy server: seconds per token")
    parser.add_argument("--policy-capacity", type=int, default=256, help="policy server: sequences at once")
    parser.add_argument("--time-scale", type=float, default=0.0, help="1: real time, 0: answers at once")
    parser.add_argument(
        "--critic-price", type=float, nargs=2, metavar=("IN", "OUT"), help="USD per 1M tokens"
    )
    parser.add_argument("--rates", type=float, nargs="+", default=[10, 50, 200, 1000], help="policy req/s")
    parser.add_argument("--accuracy", type=float, default=0.5, help="mean chance of a right final answer")
    parser.add_argument("--profile", action="store_true", help="cProfile the project process (slower)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--write", type=Path, help="put the section in this markdown file")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.project:
        run_project(args.project)
        return 0
    return drive(args)


def drive(args: argparse.Namespace) -> int:
    from sigma_assets.testing.latency_model import LatencyModel

    user = read_env_file(args.env)
    saved = [r for path in args.report_from for r in json.loads(path.read_text())["sizes"]]
    sizes = sorted(args.problems or ([] if saved else DEFAULT_SIZES))
    problems, in_source = user_problems(user.get("SIGMA_PROBLEMS"), max(sizes, default=1))
    if sizes:
        sizes = [s for s in sizes if s <= len(problems)] or [len(problems)]
    full = args.full_problems or in_source
    args.shard_given = args.problems_per_shard is not None
    if args.problems_per_shard is None:  # the full run's shards (the user's, else the project's default)
        from sigma_assets.settings import DEFAULT_NUM_SHARDS

        shards = int(user.get("SIGMA_NUM_SHARDS") or DEFAULT_NUM_SHARDS)
        args.problems_per_shard = max(1, math.ceil(full / shards))
    critic_model = user.get("SIGMA_CRITIC_MODEL", "gpt-4o-mini")
    critic_price = prices(critic_model, args.critic_price)
    latency = LatencyModel(
        ttft_s=args.policy_ttft,
        tpot_s=args.policy_tpot,
        capacity=args.policy_capacity,
        time_scale=args.time_scale,
    )
    results = run_sizes(sizes, problems, args, user, critic_model, latency) if sizes else []
    results = sorted([*saved, *results], key=lambda r: r["size"])
    report = build_report(results, args, full, critic_model, critic_price, latency)
    text = "\n".join(report["lines"])
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"sizes": results, "summary": report["summary"]}, indent=1))
    if args.write:
        from common import replace_section

        old = args.write.read_text() if args.write.exists() else ""
        section = old[old.find(HEADING) :] if HEADING in old else ""
        end = section.find("\n## ", 1)
        section = section[: end + 1] if end >= 0 else section
        kept = section[section.find(FINDINGS) :] if FINDINGS in section else ""  # written by hand
        replace_section(args.write, HEADING, text + "\n" + (kept.rstrip("\n") + "\n" if kept else ""))
    return 0


def run_sizes(
    sizes: list[int],
    problems: list[dict[str, str]],
    args: argparse.Namespace,
    user: dict[str, str],
    critic_model: str,
    latency: Any,
) -> list[dict[str, Any]]:
    """Each size in turn on one S3 server and one simulated server."""
    from local_s3 import local_s3

    from sigma_assets.testing.latency_model import LatencyModel
    from sigma_assets.testing.simulated_server import SimulatedConfig, SimulatedServerProcess

    work = Path(tempfile.mkdtemp(prefix="sigma-rehearsal-"))
    args.base_model_dir = base_model(args.base_model, work)
    results = []
    try:
        with local_s3(work / "s3", S3_KEY, S3_SECRET) as endpoint:
            golds = work / "golds.jsonl"
            write_jsonl(golds, problems)
            config = SimulatedConfig(
                problems_file=str(golds),
                critic_model=critic_model,
                policy_latency=latency,
                mean_accuracy=args.accuracy,
            )
            if args.time_scale:
                config.critic_latency = LatencyModel(
                    **{**config.critic_latency.__dict__, "time_scale": args.time_scale}
                )
            with SimulatedServerProcess(config) as server:
                for size in sizes:
                    results.append(rehearse(size, problems, args, user, endpoint, server, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def base_model(choice: str, work: Path) -> str:
    if choice == "bundled":
        from sigma_assets.settings import BUNDLED_SMOLLM2

        return BUNDLED_SMOLLM2
    if choice == "tiny":
        from sigma_assets.testing.tiny_model import build_tiny_model

        return str(build_tiny_model(work / "tiny-model"))
    return choice


if __name__ == "__main__":
    raise SystemExit(main())
