"""Dagster resources: typed, configurable views of the settings, with secrets taken through EnvVar."""

from __future__ import annotations

import dagster as dg

from sigma_assets.problems import ColumnNames, LoadedProblems, load_problems
from sigma_assets.storage import StorageRoot


class StorageResource(dg.ConfigurableResource):
    """The storage root shared by tables, the response store and models."""

    url: str
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None

    def root(self) -> StorageRoot:
        return StorageRoot(
            url=self.url,
            endpoint_url=self.endpoint_url,
            region=self.region,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
        ).prepare()


class ProblemsResource(dg.ConfigurableResource):
    """Where problems come from (SIGMA_PROBLEMS) and how they are sharded (SIGMA_NUM_SHARDS)."""

    source: str = "arithmetic"
    num_shards: int = 4
    problem_column: str | None = None
    answer_column: str | None = None
    id_column: str | None = None

    def load(self, storage: StorageRoot) -> LoadedProblems:
        columns = ColumnNames(
            problem=self.problem_column, answer=self.answer_column, problem_id=self.id_column
        )
        return load_problems(self.source, columns, storage.storage_options)
