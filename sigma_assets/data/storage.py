"""The storage root: one local folder or `s3://bucket/prefix` that holds every table, response and model.

Plain fsspec/UPath code with no Dagster imports. Writes are atomic: a reader sees the old object or the
new one, never half a file (a single S3 PUT is atomic; locally we write a temporary file and rename it).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import Any

from upath import UPath


class StorageError(RuntimeError):
    """The storage root cannot be used; the message names the URL and the variable that set it."""


@dataclass(frozen=True)
class StorageRoot:
    url: str
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec options; dagster-polars reads the endpoint only from `client_kwargs.endpoint_url`."""
        if not self.is_s3:
            return {}
        client_kwargs: dict[str, Any] = {}
        if self.endpoint_url:
            client_kwargs["endpoint_url"] = self.endpoint_url
        if self.region:
            client_kwargs["region_name"] = self.region
        options: dict[str, Any] = {"client_kwargs": client_kwargs}
        if self.access_key_id:
            options["key"] = self.access_key_id
        if self.secret_access_key:
            options["secret"] = self.secret_access_key
        return options

    def path(self, *parts: str) -> UPath:
        base = UPath(self.url.rstrip("/"), **self.storage_options)
        return base.joinpath(*parts) if parts else base

    def allow_plain_http(self) -> None:
        """polars' object_store refuses plain-http endpoints (a local S3 server) unless told otherwise."""
        if self.is_s3 and self.endpoint_url and self.endpoint_url.startswith("http://"):
            os.environ.setdefault("AWS_ALLOW_HTTP", "true")

    def prepare(self) -> StorageRoot:
        """Create the root (bucket included) and fail early, naming the URL, if it cannot be reached."""
        self.allow_plain_http()
        root = self.path()
        try:
            if self.is_s3:
                bucket = self.url[len("s3://") :].split("/", 1)[0]
                # A short-fused probe: an unreachable endpoint should fail in seconds, not after retries.
                probe = {
                    **self.storage_options,
                    "config_kwargs": {"connect_timeout": 3, "retries": {"max_attempts": 1}},
                }
                fs = UPath(self.url, **probe).fs
                if not fs.exists(bucket):
                    fs.mkdir(bucket)
                fs.invalidate_cache()
            else:
                root.mkdir(parents=True, exist_ok=True)
        except Exception as exc:  # any transport or permission failure reads the same to the user
            where = f" at endpoint {self.endpoint_url} (AWS_ENDPOINT_URL)" if self.is_s3 else ""
            raise StorageError(
                f"SIGMA_STORAGE_URL={self.url} cannot be used{where}: {type(exc).__name__}: {exc}"
            ) from exc
        return self


def write_atomic(path: UPath, data: bytes) -> None:
    """Write `data` so that readers never observe a partial object."""
    if path.protocol in ("", "file", "local"):
        local = os.fspath(path.path)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        tmp = f"{local}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, local)
    else:
        path.fs.pipe_file(path.path, data)
