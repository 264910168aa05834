"""The deployment stack's Dagster instance (infra/deploy/dagster.yaml) on a real PostgreSQL server.

One shard of `raw_problems` is materialised through that instance; a second instance object, opened
from the same yaml, then finds the run, the materialisation and the partition status, and plain SQL
on the server finds the same rows: the storage is PostgreSQL, not SQLite files under DAGSTER_HOME.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from local_postgres import PostgresServer, local_postgres

from sigma_assets.definitions import build_resources
from sigma_assets.defs.problems.assets import raw_problems, schema_ids_and_shards_valid
from sigma_assets.settings import Settings

CHECK_KEY = dg.AssetCheckKey(dg.AssetKey("raw_problems"), "schema_ids_and_shards_valid")
STACK_YAML = Path(__file__).resolve().parent.parent / "infra" / "deploy" / "dagster.yaml"
SHARD = "shard-000"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with local_postgres() as server:
        yield server


@pytest.fixture
def stack_home(postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """DAGSTER_HOME holding the stack's own dagster.yaml, its DAGSTER_PG_* pointing at the test server."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(STACK_YAML, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name, value in postgres.dagster_env().items():
        monkeypatch.setenv(name, value)
    return home


def test_stack_instance_keeps_runs_events_and_partitions_in_postgres(
    postgres: PostgresServer, stack_home: Path, tmp_path: Path
):
    env = {"SIGMA_STORAGE_URL": str(tmp_path / "store"), "SIGMA_PROBLEMS": "arithmetic:12"}
    settings = Settings.from_env({**env, "SIGMA_NUM_SHARDS": "2"})
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        result = dg.materialize(
            [raw_problems, schema_ids_and_shards_valid],
            partition_key=SHARD,
            resources=build_resources(settings),
            instance=instance,
        )
        assert result.success
        run_id = result.run_id
        rows = result.asset_materializations_for_node("raw_problems")[0].metadata["dagster/row_count"].value

    # A new instance object, from the yaml alone, sees everything the first one wrote.
    with dg.DagsterInstance.from_config(str(stack_home)) as reopened:
        run = reopened.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition"] == SHARD
        (record,) = reopened.fetch_materializations(dg.AssetKey("raw_problems"), limit=10).records
        assert (record.run_id, record.partition_key) == (run_id, SHARD)
        assert record.asset_materialization.metadata["dagster/row_count"].value == rows > 0
        assert reopened.get_materialized_partitions(dg.AssetKey("raw_problems")) == {SHARD}
        check = reopened.event_log_storage.get_latest_asset_check_execution_by_key([CHECK_KEY])
        assert check[CHECK_KEY].run_id == run_id

    # The same rows, read with SQL on the server: the data is in PostgreSQL.
    assert postgres.psql(f"SELECT status FROM runs WHERE run_id = '{run_id}'") == "SUCCESS"
    assert (
        postgres.psql(
            "SELECT partition FROM event_logs "
            f"WHERE run_id = '{run_id}' AND dagster_event_type = 'ASSET_MATERIALIZATION'"
        )
        == SHARD
    )
    assert int(postgres.psql(f"SELECT count(*) FROM event_logs WHERE run_id = '{run_id}'")) >= 5
    # ... and nowhere else: no SQLite database appeared under DAGSTER_HOME.
    assert not [p for p in stack_home.rglob("*") if p.suffix in {".db", ".sqlite", ".sqlite3"}]
