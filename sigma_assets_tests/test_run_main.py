"""The README's first command, on one job: its runs belong to the code location, as the UI's do."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parent.parent
SNAPSHOT_ID = (
    "from sigma_assets.definitions import defs; "
    "print(defs.resolve_job_def('problems_job').get_job_snapshot().snapshot_id)"
)


def run_main(
    tmp_path: Path, problems: str, shards: str, **extra: str
) -> tuple[subprocess.CompletedProcess, dict, Path]:
    """`python -m sigma_assets.run_main --jobs problems_job` in a fresh instance; (its result, env, home)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "SIGMA_STORAGE_URL": str(tmp_path / "data"),
        "SIGMA_PROBLEMS": problems,
        "SIGMA_NUM_SHARDS": shards,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        **extra,
    }
    done = subprocess.run(
        [sys.executable, "-m", "sigma_assets.run_main", "--jobs", "problems_job"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done, env, home


def test_main_command_runs_belong_to_the_code_location(tmp_path: Path) -> None:
    done, env, home = run_main(tmp_path, "arithmetic:6", "2")
    # Progress: a line per run and per step, with the elapsed time, and each run's headline figures.
    for shard in ("shard-000", "shard-001"):
        assert f"problems_job {shard} (" in done.stdout
        assert f"problems_job {shard}: raw_problems running (0/2 steps done)" in done.stdout
    assert "raw_problems: row_count=" in done.stdout
    # Nothing else: no library progress bars, INFO or DEBUG lines (only with SIGMA_VERBOSE=1).
    own = re.compile(r"^(\[\s*\d+ s\] |  [a-z_]+: )")
    noise = [
        line for line in (done.stdout + done.stderr).splitlines() if line.strip() and not own.match(line)
    ]
    assert noise == []

    # ... with the job snapshot the location serves, so Re-execute finds the same version.
    served = subprocess.run(
        [sys.executable, "-c", SNAPSHOT_ID], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        for run in runs:
            # Not a "jobless" run: it names the location and repository of workspace.yaml.
            origin = run.remote_job_origin
            assert origin is not None and origin.location_name == "sigma"
            assert origin.repository_origin.repository_name == "__repository__"
            assert run.job_name == "problems_job"
            assert run.tags["dagster/partition"] in ("shard-000", "shard-001")
            assert run.job_snapshot_id == served.stdout.strip()
        assert instance.get_materialized_partitions(dg.AssetKey("raw_problems")) == {"shard-000", "shard-001"}


def test_verbose_output_keeps_the_libraries_lines(tmp_path: Path) -> None:
    done, _, _ = run_main(tmp_path, "arithmetic:4", "1", SIGMA_VERBOSE="1")
    assert "Started Dagster code server" in done.stdout + done.stderr
