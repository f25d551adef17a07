"""Where policies come from, each with the place an admin can find it.

- ``policies:`` in bastion.yaml (already validated with the rest of the configuration): a rule
  is located as ``policies[i]`` and named that way unless it has an ``id``.
- ``policy.files``: YAML files with a top-level ``policies:`` list (each rule located and, by
  default, named ``<file>:<line>``) and raw Cedar files (``.cedar``), split into single
  policies at top-level ``;`` so that every policy, and every syntax error, has a line.

Errors are :class:`~bastion.core.errors.ConfigError` naming the file and line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cedarpy
import yaml
from cedarpy import pst
from pydantic import ValidationError

from bastion.config.model import Settings
from bastion.config.policy import PolicyRule, rule_errors
from bastion.core.attributes import AttributeType
from bastion.core.errors import ConfigError

ReadText = Callable[[Path], str]


@dataclass(frozen=True, slots=True)
class YamlRule:
    rule: PolicyRule
    rule_id: str
    location: str  # "policies[3]" or "policies/github.yaml:12"


@dataclass(frozen=True, slots=True)
class CedarPolicy:
    """One policy of a raw Cedar file."""

    text: str
    location: str  # "policies/extra.cedar:7"
    rule_id: str  # its @id annotation, else its location
    node: pst.Template


@dataclass(frozen=True, slots=True)
class PolicySources:
    rules: tuple[YamlRule, ...]
    cedar: tuple[CedarPolicy, ...]
    attributes: Mapping[str, AttributeType] = field(default_factory=dict)  # policy.user_attributes


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def load_sources(
    settings: Settings, *, base_dir: Path | None = None, read: ReadText = _read
) -> PolicySources:
    """Every rule of the configuration and of ``policy.files`` (relative paths: to ``base_dir``,
    default the working directory)."""
    upstreams = [u.name for u in settings.upstreams]
    declared = dict(settings.policy.user_attributes)
    rules = [
        YamlRule(rule, rule.id or f"policies[{i}]", f"policies[{i}]")
        for i, rule in enumerate(settings.policies)
    ]
    cedar: list[CedarPolicy] = []
    for name in settings.policy.files:
        path = Path(name) if base_dir is None or Path(name).is_absolute() else base_dir / name
        try:
            text = read(path)
        except FileNotFoundError:
            raise ConfigError(f"{name}: no such policy file (policy.files)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{name}: cannot read the policy file: {exc}") from None
        if path.suffix == ".cedar":
            cedar.extend(cedar_policies(text, name))
        elif path.suffix in (".yaml", ".yml"):
            rules.extend(yaml_rules(text, name, upstreams, settings.auth.scopes, declared))
        else:
            raise ConfigError(f"{name}: policy files end in .yaml, .yml or .cedar")
    _unique_ids([(r.rule_id, r.location) for r in rules] + [(c.rule_id, c.location) for c in cedar])
    return PolicySources(tuple(rules), tuple(cedar), declared)


def _unique_ids(ids: Iterable[tuple[str, str]]) -> None:
    seen: dict[str, str] = {}
    for rule_id, location in ids:
        if rule_id in seen and seen[rule_id] != location:
            raise ConfigError(f"{location}: rule id '{rule_id}' is also used at {seen[rule_id]}")
        seen.setdefault(rule_id, location)


# -- YAML files ---------------------------------------------------------------------------------


def _line(node: yaml.Node, loc: tuple[int | str, ...]) -> int:
    """The 1-based line of the deepest node ``loc`` reaches inside ``node``."""
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part]
            if not match:
                break
            key, value = match[0]
            node = value if isinstance(value, yaml.CollectionNode) else key
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
    return int(node.start_mark.line) + 1


def _policies_node(root: yaml.Node | None, name: str) -> yaml.SequenceNode | None:
    if root is None:
        return None
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{name}:1: a policy file is a mapping with a 'policies:' list")
    for key, value in root.value:
        if not isinstance(key, yaml.ScalarNode) or key.value != "policies":
            raise ConfigError(
                f"{name}:{key.start_mark.line + 1}: unknown key (a policy file has 'policies:' only)"
            )
        if isinstance(value, yaml.ScalarNode) and value.tag.endswith(":null"):
            return None
        if not isinstance(value, yaml.SequenceNode):
            raise ConfigError(f"{name}:{value.start_mark.line + 1}: 'policies' must be a list of rules")
        return value
    return None


def yaml_rules(
    text: str,
    name: str,
    upstreams: Iterable[str],
    scopes: Iterable[str],
    attributes: Mapping[str, AttributeType],
) -> list[YamlRule]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    seq = _policies_node(root, name)
    if seq is None:
        return []
    upstreams, scopes = list(upstreams), list(scopes)
    out: list[YamlRule] = []
    for i, (item, node) in enumerate(zip(data["policies"], seq.value, strict=True)):
        location = f"{name}:{node.start_mark.line + 1}"
        try:
            rule = PolicyRule.model_validate(item)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
                field = ".".join(str(p) for p in loc) or "rule"
                message = err["msg"].removeprefix("Value error, ")
                if err["type"] == "extra_forbidden":
                    message = "unknown key"
                problems.append(f"{name}:{_line(node, loc)}: policies[{i}].{field}: {message}")
            raise ConfigError("\n".join(problems)) from None
        errors = rule_errors(rule, upstreams, scopes, attributes)
        if errors:
            raise ConfigError("\n".join(f"{location}: policies[{i}]: {e}" for e in errors))
        out.append(YamlRule(rule, rule.id or location, location))
    return out


# -- raw Cedar files ----------------------------------------------------------------------------


def _chunks(text: str) -> list[tuple[int, str]]:
    """(first line, text) of each top-level ``;``-terminated statement; comments and strings are
    skipped while looking for the ``;``. A trailing statement without ``;`` is kept (it fails to
    parse, with its line)."""
    chunks: list[tuple[int, str]] = []
    start, line, first_line = 0, 1, 0
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "\n":
            line += 1
        elif char == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif char == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                elif text[i] == "\n":
                    line += 1
                i += 1
        elif not char.isspace() and not first_line:
            first_line = line
        if char == ";":
            chunks.append((first_line, text[start : i + 1]))
            start, first_line = i + 1, 0
        i += 1
    if first_line:
        chunks.append((first_line, text[start:]))
    return chunks


def cedar_policies(text: str, name: str) -> list[CedarPolicy]:
    out: list[CedarPolicy] = []
    for line, chunk in _chunks(text):
        location = f"{name}:{line}"
        try:
            parsed = cedarpy.policies_to_pst(chunk)
        except ValueError as exc:
            raise ConfigError(f"{location}: Cedar syntax error: {exc}") from None
        if parsed.templates:
            raise ConfigError(f"{location}: policy templates (?principal, ?resource) are not supported")
        for node in parsed.static_policies.values():
            rule_id = node.annotations.get("id") or location
            out.append(CedarPolicy(chunk.strip(), location, rule_id, node))
    return out


__all__ = ["CedarPolicy", "PolicySources", "YamlRule", "cedar_policies", "load_sources", "yaml_rules"]
