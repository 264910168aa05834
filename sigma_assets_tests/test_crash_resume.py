"""A shard run SIGKILLed mid-critique, then relaunched: no lost or duplicate rows, few calls paid twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import polars as pl

from sigma_assets.testing.fault_server import FaultServer
from sigma_assets_tests.support import SEARCH_CONFIG, arithmetic_policy, scripted_critic

CONCURRENCY = 4

RUN_SHARD = textwrap.dedent(
    """
    import json
    import sys

    from sigma_assets.definitions import ASSETS, build_resources
    from sigma_assets.defs.shared.resources import OpenAIModelResource, TransformersModelResource
    from sigma_assets.settings import Settings
    from sigma_assets_tests.support import materialize_shard


    def main() -> int:
        policy_url, critic_url, shard, search_config = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
        resources = build_resources(Settings.from_env()) | {
            "policy": OpenAIModelResource(api_key="unused", model="scripted-policy", base_url=policy_url),
            "critic": OpenAIModelResource(
                api_key="unused", model="gpt-4o-mini", base_url=critic_url, concurrency=CONCURRENCY
            ),
        }
        wanted = ("raw_problems", "mcts_trees", "sibling_sets", "critiques")
        selection = [a for a in ASSETS if a.key.path[0] in wanted]
        config = {
            "ops": {
                "mcts_trees": {"config": json.loads(search_config)},
                "critiques": {"config": {"mode": "path"}},
            }
        }
        result = materialize_shard(selection, shard, "0.7", resources=resources, run_config=config)
        return 0 if result.success else 1


    if __name__ == "__main__":  # answer-checker workers are spawned and re-import this module
        sys.exit(main())
    """
).replace("CONCURRENCY", str(CONCURRENCY))


def test_sigkill_mid_shard_then_relaunch(tmp_path):
    env = {
        **os.environ,
        "SIGMA_STORAGE_URL": str(tmp_path / "store"),
        "SIGMA_PROBLEMS": "arithmetic:200",
        "SIGMA_NUM_SHARDS": "4",
        "PYTHONPATH": os.getcwd(),
    }
    script = tmp_path / "run_shard.py"
    script.write_text(RUN_SHARD)
    with (
        FaultServer(responder=arithmetic_policy) as policy,
        FaultServer(responder=scripted_critic, latency_s=0.4) as critic,
    ):
        args = [
            sys.executable,
            str(script),
            policy.base_url,
            critic.base_url,
            "shard-000",
            json.dumps(SEARCH_CONFIG),
        ]
        child = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 240
        # Kill once the second wave of critique calls is in flight: the first wave is durable by then.
        while critic.stats()["total"] < CONCURRENCY + 1:
            assert child.poll() is None, child.stderr.read().decode()[-3000:] if child.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)  # the run process dies mid-shard, with calls in flight
        child.wait()
        paid_before_kill = critic.stats()["total"]

        rerun = subprocess.run(args, env=env, capture_output=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]
        total = critic.stats()["total"]

    assets = tmp_path / "store" / "assets"
    siblings = pl.read_parquet(assets / "sibling_sets" / "shard-000" / "0.7.parquet")
    critiques = pl.read_parquet(assets / "critiques" / "shard-000" / "0.7.parquet")
    expected = siblings["problem_id"].n_unique()  # path mode: one critique call per problem
    assert paid_before_kill < expected  # the kill really came mid-shard
    # Every (problem, depth) once: nothing lost, nothing duplicated.
    assert sorted(zip(critiques["problem_id"], critiques["depth"], strict=True)) == sorted(
        zip(siblings["problem_id"], siblings["depth"], strict=True)
    )
    # Only calls in flight at the kill (at most the concurrency) were paid twice.
    assert expected <= total <= expected + CONCURRENCY
