"""Run config classes derived from the plain settings dataclasses: one definition of each setting.

The method's settings (`MCTSSettings`, `RefinementSettings`) are plain frozen dataclasses that
validate themselves; the Launchpad's config schema is built from their fields, with the defaults of
the budget that fits the configured model (see `method.budgets`), so nothing is written twice.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import dagster as dg
import pydantic


def config_from_settings(
    name: str,
    defaults: Any,
    exclude: tuple[str, ...] = (),
    extra: dict[str, tuple[Any, Any]] | None = None,
    doc: str = "",
) -> type[dg.Config]:
    """A `dg.Config` with one field per field of the dataclass instance `defaults` (its values as
    defaults), less `exclude`, plus `extra` fields given as {name: (type, default)}."""
    hints = typing.get_type_hints(type(defaults))
    fields: dict[str, Any] = {
        f.name: (hints[f.name], getattr(defaults, f.name))
        for f in dataclasses.fields(defaults)
        if f.name not in exclude
    }
    fields.update(extra or {})
    model = pydantic.create_model(name, __base__=dg.Config, __doc__=doc, **fields)
    return typing.cast(type[dg.Config], model)


def settings_from_config(settings_type: type, config: dg.Config, **overrides: Any) -> Any:
    """The settings dataclass for `config` (fields it does not know are left out), validated there."""
    names = {f.name for f in dataclasses.fields(settings_type)}
    values = {k: v for k, v in config.model_dump().items() if k in names}
    return settings_type(**values, **overrides)
