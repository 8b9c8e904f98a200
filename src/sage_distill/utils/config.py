"""The one YAML config loader: every config file of the project (training, robot training, the
orchestrator) is read here and validated by its pydantic model, and every problem becomes one
ConfigError `<file>: <field.path>: <problem>` before anything runs or is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Base of every config section: an unknown key is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid")


def read_yaml(path: str | Path, what: str = "config") -> dict[str, Any]:
    """A YAML file's top-level mapping, or one ConfigError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"is a directory; give a {what} YAML file", file=path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", file=path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read: {e}", file=path) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {' '.join(str(e).split())}", file=path) from None
    except RecursionError:
        raise ConfigError("not valid YAML: nested too deeply", file=path) from None
    if data is None:
        raise ConfigError(f"the {what} is empty", file=path)
    if not isinstance(data, dict):
        raise ConfigError(f"top level must be a mapping of settings, got a YAML {type(data).__name__}", file=path)
    return data


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any], file: str | Path | None = None) -> dict[str, Any]:
    """`{"optim.steps": 100}` style overrides written into nested sections (a copy)."""
    data = dict(data)
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            child = node.get(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"'{p}' is not a section", file=file, where=f"--set {dotted}")
            node[p] = child = dict(child)
            node = child
        node[leaf] = value
    return data


def validate(model: type[M], data: dict[str, Any], file: str | Path | None = None) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise validation_error(e, file) from None


def validation_error(e: ValidationError, file: str | Path | None = None) -> ConfigError:
    first = e.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    shown = repr(first.get("input"))
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    msg = first["msg"].removeprefix("Value error, ")
    return ConfigError(f"{msg} (got {shown})" if "input" in first and first["type"] != "missing" else msg,
                       file=file, where=where)


def load_config(model: type[M], path: str | Path | None, overrides: dict[str, Any] | None = None,
                base: dict[str, Any] | None = None, what: str = "config") -> M:
    """`model` validated from `base` (e.g. values given as options), the YAML file at `path` over it, and
    `overrides` over both."""
    data = dict(base or {})
    if path is not None:
        data.update(read_yaml(path, what))
    data = apply_overrides(data, overrides or {}, path)
    return validate(model, data, path or "options")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`--set optim.steps=100` style overrides; values are parsed as YAML (numbers, lists...)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"expects key=value, got '{item}'", where="--set")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"'{value}' is not a YAML value", where=f"--set {key.strip()}") from None
    return out
