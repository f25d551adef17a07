"""Load bastion.yaml: parse YAML, substitute ``${ENV_VAR}`` references, validate.

Errors name the key path (``upstreams[1].http.url``) so the admin can find the line.
Only ``bastion.app`` and ``bastion.cli`` call this with the real environment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bastion.config.model import Settings
from bastion.core.errors import ConfigError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute(value: Any, env: Mapping[str, str], path: str) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{path}: environment variable ${{{name}}} is not set")

        return _ENV_REF.sub(replace, value)
    if isinstance(value, list):
        return [_substitute(item, env, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {
            key: _substitute(item, env, f"{path}.{key}" if path else str(key)) for key, item in value.items()
        }
    return value


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


def format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see `bastion config schema`)"
        lines.append(f"  {_key_path(loc)}: {message}")
    return "\n".join(lines)


def load_config_text(text: str, env: Mapping[str, str], source: str = "<config>") -> Settings:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys")
    try:
        substituted = _substitute(raw, env, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        return Settings.model_validate(substituted)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(path: str | Path, env: Mapping[str, str]) -> Settings:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such configuration file") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    return load_config_text(text, env, str(file))
