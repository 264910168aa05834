"""The UI as a user sees it: `dg dev` on a loopback port, driven in headless chromium through Playwright.

One shard is searched and refined beforehand (scripted policy and critic on loopback servers) into the same
instance and storage the server uses, so `refined_paths` has a preview to show. In the browser: the asset
lineage shows the eight assets in pipeline order, a `raw_problems` shard materialised from the UI succeeds,
and the refined path's preview renders as markdown. `SIGMA_UPDATE_SCREENSHOT=1` rewrites
docs/asset_graph.png from the lineage view.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest

from sigma_assets.definitions import build_resources
from sigma_assets.defs.problems.assets import raw_problems
from sigma_assets.defs.refinement.assets import critiques, refined_paths
from sigma_assets.defs.search.assets import mcts_trees, sibling_sets
from sigma_assets.defs.shared.resources import OpenAIModelResource
from sigma_assets.settings import Settings
from sigma_assets.testing.fault_server import FaultServer
from sigma_assets_tests.support import (
    PATH_MODE,
    SEARCH_CONFIG,
    arithmetic_policy,
    materialize_shard,
    scripted_critic,
    shard_with_problems,
)

pytestmark = pytest.mark.ui

REPO = Path(__file__).resolve().parent.parent
CHAIN = [
    "raw_problems",
    "mcts_trees",
    "sibling_sets",
    "critiques",
    "refined_paths",
    "sft_dataset",
    "finetuned_model",
    "eval_scores",
]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 120_000  # generous: 2 shared cores, a run process to start
# A non-interactive shell starts background jobs with SIGINT ignored, and children inherit that: restore
# the default so that SIGINT stops the server as Ctrl-C does.
WITH_DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)
# The only lines with "warn" allowed: the test keeps its instance in a temporary DAGSTER_HOME, so Dagster
# notes that the repository's dagster.yaml is not the one in use (the README's command runs with
# DAGSTER_HOME at the repository root); and a daemon that first starts after runs were stored notes that
# it watches from the newest event on (the README says so).
EXPECTED_NOTES = ("Found a dagster instance configuration value", "ignoring older events")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevServer:
    def __init__(self, process: subprocess.Popen, url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    def wait_ready(self, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"dg dev exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/server_info", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(1)
        pytest.fail(f"dg dev did not answer within {timeout_s} s:\n{self.log.read_text()}")


@contextmanager
def dg_dev(env: dict[str, str], log: Path) -> Iterator[DevServer]:
    """`dg dev` in its own process group, stopped as Ctrl-C stops it: SIGINT to the group, then wait."""
    port = free_port()
    dg_cli = Path(sys.executable).with_name("dg")
    command = [str(dg_cli), "dev", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", WITH_DEFAULT_SIGINT, *command],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield DevServer(process, f"http://127.0.0.1:{port}", log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def materialize_one_shard(settings: Settings, home: Path) -> str:
    """Search and refine one (shard, 0.7) with scripted models into the instance at `home`."""
    key = shard_with_problems(settings)
    with (
        FaultServer(responder=arithmetic_policy) as policy_server,
        FaultServer(responder=scripted_critic) as critic_server,
        dg.DagsterInstance.from_config(str(home)) as instance,
    ):
        result = materialize_shard(
            [raw_problems, mcts_trees, sibling_sets, critiques, refined_paths],
            key,
            resources=build_resources(settings)
            | {
                "policy": OpenAIModelResource(
                    api_key="unused", model="scripted-policy", base_url=policy_server.base_url
                ),
                "critic": OpenAIModelResource(
                    api_key="unused", model="scripted-critic", base_url=critic_server.base_url
                ),
            },
            instance=instance,
            run_config={"ops": {"mcts_trees": {"config": SEARCH_CONFIG}, **PATH_MODE}},
        )
    assert result.success
    return key


def test_ui_lineage_launch_and_preview(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        message = "chromium is missing: infra/install_test_packages.sh installs it (as root, with apt-get)"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(message)
        pytest.skip(message)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    sigma_env = {
        "SIGMA_STORAGE_URL": str(tmp_path / "data"),
        "SIGMA_PROBLEMS": "arithmetic:12",
        "SIGMA_NUM_SHARDS": "2",
    }
    env = {
        **os.environ,
        **sigma_env,
        "DAGSTER_HOME": str(home),
        # The code server imports this checkout, whatever is installed.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    log = tmp_path / "dg_dev.log"
    with dg_dev(env, log) as server:
        # The server starts while the shard is searched and refined in this process.
        shard = materialize_one_shard(Settings.from_env(sigma_env), home)
        other_shard = next(s for s in ("shard-000", "shard-001") if s != shard)
        server.wait_ready()

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 820})
            page.set_default_timeout(WAIT_MS)
            expect.set_options(timeout=WAIT_MS)
            # The first visit shows a "Join the Dagster community" dialog over the page: skip it.
            page.add_locator_handler(
                page.get_by_text("Join the Dagster community"),
                lambda: page.get_by_role("button", name="Skip").click(),
            )

            # (a) The lineage upstream of eval_scores: all eight assets, laid out left to right in order.
            page.goto(f"{server.url}/assets/eval_scores?view=lineage&lineageScope=upstream&lineageDepth=8")
            graph = page.locator("svg")
            labels = [graph.get_by_text(name, exact=True) for name in CHAIN]
            for label in labels:
                expect(label).to_be_visible()
            xs = [label.bounding_box()["x"] for label in labels]
            assert xs == sorted(xs) and len(set(xs)) == len(xs), dict(zip(CHAIN, xs, strict=True))
            response = page.request.post(
                f"{server.url}/graphql",
                data=json.dumps({"query": "{ assetNodes { assetKey { path } dependencyKeys { path } } }"}),
                headers={"Content-Type": "application/json"},
            )
            nodes = response.json()["data"]["assetNodes"]
            upstream = {
                n["assetKey"]["path"][-1]: {d["path"][-1] for d in n["dependencyKeys"]} for n in nodes
            }
            for before, after in itertools.pairwise(CHAIN):
                assert before in upstream[after], (before, after, upstream[after])
            page.screenshot(path=tmp_path / "asset_graph.png", full_page=False)
            if os.environ.get("SIGMA_UPDATE_SCREENSHOT") == "1":
                _save_graph(page, REPO / "docs" / "asset_graph.png")

            # (b) One shard of raw_problems materialised from the UI: Materialize, pick the shard, launch.
            page.goto(f"{server.url}/assets/raw_problems")
            page.get_by_role("button", name=re.compile("Materialize")).first.click()
            page.get_by_text("Select a partition or create one").click()
            page.locator("label", has_text=other_shard).click()
            page.keyboard.press("Escape")
            page.get_by_role("button", name="Launch 1 run").click()
            page.get_by_role("link", name="View", exact=True).click()  # the "Launched run" toast
            expect(page.get_by_text(f"partition: {other_shard}")).to_be_visible()
            expect(page.get_by_text("Success", exact=True).first).to_be_visible()
            page.screenshot(path=tmp_path / "run.png")

            # (c) refined_paths' latest materialisation: the preview metadata rendered as markdown.
            page.goto(f"{server.url}/assets/refined_paths?view=events")
            expect(page.get_by_role("heading", name="Step 1")).to_be_visible()
            preview = page.locator("td", has=page.get_by_role("heading", name="Step 1")).last
            expect(preview.locator("strong", has_text="selected").first).to_be_visible()
            expect(preview.locator("strong", has_text="feedback").first).to_be_visible()
            expect(preview.locator("strong", has_text="revision").first).to_be_visible()
            expect(preview.locator("li", has_text="answer:").first).to_be_visible()
            expect(preview.locator("li", has_text="sibling 1").first).to_be_visible()
            assert "**" not in preview.inner_text() and "<br>" not in preview.inner_text()
            page.screenshot(path=tmp_path / "refined_paths_preview.png", full_page=True)
            browser.close()
    assert server.process.returncode == 0, log.read_text()
    output = log.read_text()
    assert "Dagster services shut down." in output
    warnings = [
        line
        for line in output.splitlines()
        if re.search(r"warn", line, re.IGNORECASE) and not any(note in line for note in EXPECTED_NOTES)
    ]
    assert not warnings, warnings


def _save_graph(page, path: Path) -> None:
    """The nodes and their groups, without the zoom controls, with a small margin."""
    page.add_style_tag(content='[class*="zoomSlider"] { visibility: hidden; }')
    boxes = [box for box in (o.bounding_box() for o in page.locator("svg foreignObject").all()) if box]
    left = max(min(b["x"] for b in boxes) - 16, 0)
    top = max(min(b["y"] for b in boxes) - 16, 0)
    right = max(b["x"] + b["width"] for b in boxes) + 16
    bottom = max(b["y"] + b["height"] for b in boxes) + 16
    page.screenshot(path=path, clip={"x": left, "y": top, "width": right - left, "height": bottom - top})
