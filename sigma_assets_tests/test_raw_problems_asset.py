"""raw_problems through a real Dagster instance, on a local root and on the real S3 server."""

from __future__ import annotations

import io
import json

import dagster as dg
import polars as pl
import pytest
from upath import UPath

from sigma_assets.data.problems import load_problems
from sigma_assets.data.storage import StorageError, StorageRoot
from sigma_assets.definitions import build_resources, defs
from sigma_assets.defs.problems.assets import (
    SKIPPED_SHARE_CHECK,
    RawProblemsConfig,
    raw_problems,
    schema_ids_and_shards_valid,
)
from sigma_assets.defs.shared.partitions import SHARD_TEMPERATURE, SHARDS
from sigma_assets.method.grading import AnswerChecker, gold_alternatives
from sigma_assets.settings import Settings, SettingsError


def materialize_all_shards(settings: Settings) -> list[dg.ExecuteInProcessResult]:
    instance = dg.DagsterInstance.ephemeral()
    return [
        dg.materialize(
            [raw_problems, schema_ids_and_shards_valid],
            partition_key=key,
            resources=build_resources(settings),
            instance=instance,
        )
        for key in SHARDS.get_partition_keys()
    ]


def read_shard(root: StorageRoot, key: str) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(root.path("assets", "raw_problems", f"{key}.parquet").read_bytes()))


def test_definitions_load():
    assert defs.resolve_asset_graph().get_all_asset_keys() >= {dg.AssetKey("raw_problems")}
    assert defs.resolve_job_def("problems_job").partitions_def == SHARDS
    assert defs.resolve_job_def("generation_job").partitions_def == SHARD_TEMPERATURE
    keys = defs.resolve_job_def("generation_job").partitions_def.get_partition_keys()
    assert sorted(str(k) for k in keys) == sorted(
        f"{s}|{t}" for s in SHARDS.get_partition_keys() for t in ("0.4", "0.7")
    )


def test_every_shard_on_the_local_root(tmp_path):
    settings = Settings.from_env({"SIGMA_STORAGE_URL": str(tmp_path / "store")})
    results = materialize_all_shards(settings)
    assert all(r.success for r in results)
    root = StorageRoot(settings.storage_url)
    frames = {key: read_shard(root, key) for key in SHARDS.get_partition_keys()}
    total = sum(len(f) for f in frames.values())
    assert total == 12  # every bundled problem (the default 12) lands in exactly one shard
    for key, frame in frames.items():
        assert frame["shard"].unique().to_list() in ([key], [])
    # No temporary files are left behind by the atomic writes.
    assert sorted(p.name for p in (tmp_path / "store" / "assets" / "raw_problems").iterdir()) == [
        f"{k}.parquet" for k in SHARDS.get_partition_keys()
    ]
    check = results[0].get_asset_check_evaluations()[0]
    assert check.passed


def test_same_problem_lands_in_the_same_shard_across_runs_and_sources(tmp_path):
    settings = Settings.from_env({"SIGMA_STORAGE_URL": str(tmp_path / "a")})
    materialize_all_shards(settings)
    first = {k: read_shard(StorageRoot(settings.storage_url), k) for k in SHARDS.get_partition_keys()}
    # A larger source (more problems) keeps old problems where they were.
    bigger = Settings.from_env({"SIGMA_STORAGE_URL": str(tmp_path / "b"), "SIGMA_PROBLEMS": "arithmetic:64"})
    materialize_all_shards(bigger)
    for key, frame in first.items():
        later = read_shard(StorageRoot(bigger.storage_url), key)
        assert set(frame["problem_id"]) <= set(later["problem_id"])


def test_every_shard_on_the_s3_root(s3_env):
    settings = Settings.from_env()
    assert settings.is_s3
    results = materialize_all_shards(settings)
    assert all(r.success for r in results)
    root = StorageRoot(
        settings.storage_url,
        s3_env["AWS_ENDPOINT_URL"],
        "us-east-1",
        s3_env["AWS_ACCESS_KEY_ID"],
        s3_env["AWS_SECRET_ACCESS_KEY"],
    )
    assert sum(len(read_shard(root, k)) for k in SHARDS.get_partition_keys()) == 12
    # Secrets went in through EnvVar: they are in neither the run's config nor its event log.
    for result in results:
        events = json.dumps([str(e) for e in result.all_events])
        assert s3_env["AWS_SECRET_ACCESS_KEY"] not in events
        assert s3_env["AWS_SECRET_ACCESS_KEY"] not in json.dumps(result.dagster_run.run_config, default=str)


def test_jsonl_problems_from_s3(s3_env, tmp_path):
    root = StorageRoot(
        s3_env["SIGMA_STORAGE_URL"],
        s3_env["AWS_ENDPOINT_URL"],
        "us-east-1",
        s3_env["AWS_ACCESS_KEY_ID"],
        s3_env["AWS_SECRET_ACCESS_KEY"],
    ).prepare()
    target = root.path("inputs", "gsm8k.jsonl")
    rows = [{"question": f"What is {i} + 1?", "answer": f"{i}+1={i + 1}\n#### {i + 1}"} for i in range(12)]
    target.write_text("\n".join(json.dumps(r) for r in rows))
    settings = Settings.from_env({**s3_env, "SIGMA_PROBLEMS": str(target)})
    results = materialize_all_shards(settings)
    assert all(r.success for r in results)
    counts = [
        r.asset_materializations_for_node("raw_problems")[0].metadata["dagster/row_count"].value
        for r in results
    ]
    assert sum(counts) == 12


def test_skipped_rows_show_in_metadata(tmp_path):
    source = tmp_path / "p.jsonl"
    source.write_text('{"problem": "1+1?", "answer": "2"}\n{"problem": "", "answer": "3"}\n')
    settings = Settings.from_env({"SIGMA_STORAGE_URL": str(tmp_path / "s"), "SIGMA_PROBLEMS": str(source)})
    results = materialize_all_shards(settings)
    metadata = [r.asset_materializations_for_node("raw_problems")[0].metadata for r in results]
    # Every skipped row is listed once, in the shard it would have landed in.
    assert sum(m["skipped_rows"].value for m in metadata) == 1
    (listed,) = [m["skipped"].value for m in metadata if m["skipped_rows"].value]
    assert f"| {source} | 2 | problem |  | empty problem |" in listed


def _skipped_share_checks(result: dg.ExecuteInProcessResult) -> list[dg.AssetCheckEvaluation]:
    return [e for e in result.get_asset_check_evaluations() if e.check_name == SKIPPED_SHARE_CHECK]


def test_champ_materialises_on_every_shard_with_gradeable_answers(tmp_path):
    settings = Settings.from_env({"SIGMA_STORAGE_URL": str(tmp_path / "s"), "SIGMA_PROBLEMS": "champ"})
    results = materialize_all_shards(settings)
    assert all(r.success for r in results)
    root = StorageRoot(settings.storage_url)
    stored = pl.concat([read_shard(root, k) for k in SHARDS.get_partition_keys()])
    metadata = [r.asset_materializations_for_node("raw_problems")[0].metadata for r in results]
    skipped = sum(m["skipped_rows"].value for m in metadata)
    assert stored.height + skipped == 270  # every CHAMP row is stored or listed
    assert stored.height >= 190  # prose and yes/no rows go, the mathematics stays
    with AnswerChecker() as checker:
        forms = [form for answer in stored["answer"] for form in gold_alternatives(answer)]
        assert checker.ungradeable_reasons(forms) == [None] * len(forms)
        # The whole source vetted at once keeps the same problems as the shards vetted one by one.
        whole = load_problems("champ", checker=checker)
    assert sorted(stored["problem_id"]) == sorted(p.problem_id for p in whole.problems)
    listed = "\n".join(m["skipped"].value for m in metadata)
    for row in whole.skipped:
        assert f"| champ | {row.row} | answer |" in listed
    for result, meta in zip(results, metadata, strict=True):
        (check,) = _skipped_share_checks(result)
        assert check.severity == dg.AssetCheckSeverity.WARN
        share = check.metadata["skipped_share"].value
        assert share == meta["skipped_share"].value
        assert check.passed == (share <= RawProblemsConfig().max_skipped_share)


def test_skipped_share_check_warns_above_its_threshold(tmp_path):
    source = tmp_path / "p.jsonl"
    rows = [{"problem": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(8)]
    rows += [{"problem": f"Is {i} even?", "answer": "Yes"} for i in range(8)]
    source.write_text("\n".join(json.dumps(r) for r in rows))
    settings = Settings.from_env({"SIGMA_STORAGE_URL": str(tmp_path / "s"), "SIGMA_PROBLEMS": str(source)})
    instance = dg.DagsterInstance.ephemeral()
    warned = []
    for limit in (0.0, 1.0):
        for key in SHARDS.get_partition_keys():
            result = dg.materialize(
                [raw_problems],
                partition_key=key,
                resources=build_resources(settings),
                instance=instance,
                run_config={"ops": {"raw_problems": {"config": {"max_skipped_share": limit}}}},
            )
            assert result.success  # a warning never fails the run
            (check,) = _skipped_share_checks(result)
            skipped = result.asset_materializations_for_node("raw_problems")[0].metadata["skipped_rows"].value
            assert check.passed == (limit == 1.0 or skipped == 0)
            warned.append(not check.passed)
    assert any(warned)  # the yes/no rows landed somewhere, and that shard warned


def test_unreachable_s3_endpoint_names_url_and_variable():
    root = StorageRoot(
        "s3://sigma-test/x", endpoint_url="http://127.0.0.1:9", access_key_id="a", secret_access_key="b"
    )
    with pytest.raises(
        StorageError, match=r"SIGMA_STORAGE_URL=s3://sigma-test/x .*127\.0\.0\.1:9 \(AWS_ENDPOINT_URL\)"
    ):
        root.prepare()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SIGMA_NUM_SHARDS": "zero"}, "SIGMA_NUM_SHARDS='zero': expected a positive integer"),
        ({"SIGMA_POLICY_BACKEND": "tpu"}, "SIGMA_POLICY_BACKEND='tpu': expected one of"),
        ({"SIGMA_STORAGE_URL": "gs://bucket"}, "use a local path or s3://"),
        ({"SIGMA_POLICY_BACKEND": "openai"}, "needs SIGMA_POLICY_BASE_URL"),
    ],
)
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        Settings.from_env(env)


def test_critic_defaults_follow_the_api_key():
    assert Settings.from_env({}).critic_backend == "transformers"
    with_key = Settings.from_env({"OPENAI_API_KEY": "sk-test"})
    assert (with_key.critic_backend, with_key.critic_model) == ("openai", "gpt-4o-mini")


def test_atomic_write_leaves_no_partial_file(tmp_path):
    from sigma_assets.data.storage import write_atomic

    target = UPath(tmp_path / "dir" / "x.bin")
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in (tmp_path / "dir").iterdir()] == ["x.bin"]


def test_every_asset_publishes_a_described_schema_that_matches_its_table():
    from sigma_assets.data.problems import RAW_PROBLEMS_COLUMNS
    from sigma_assets.method.refinement_records import CRITIQUE_COLUMNS, REFINED_COLUMNS
    from sigma_assets.method.siblings import SIBLING_COLUMNS
    from sigma_assets.method.tree_table import TREE_COLUMNS

    tables = {
        "raw_problems": RAW_PROBLEMS_COLUMNS,
        "mcts_trees": TREE_COLUMNS,
        "sibling_sets": SIBLING_COLUMNS,
        "critiques": CRITIQUE_COLUMNS,
        "refined_paths": REFINED_COLUMNS,
    }
    graph = defs.resolve_asset_graph()
    for name, table in tables.items():
        schema = graph.get(dg.AssetKey(name)).metadata["dagster/column_schema"]
        assert [c.name for c in schema.columns] == list(table)
        assert all(c.description and len(c.description) > 10 for c in schema.columns), name
