"""Reading recipe text: YAML files, ``key.path=value`` overrides, and validation errors as sentences.

Kept apart from ``recipe.py`` (the models) so each stays short; ``recipe.load_recipe`` is the entry point.
"""
from __future__ import annotations

import copy
import difflib
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pyrawan.errors import InputError


MAX_OVERRIDE_CHARS = 10_000
MAX_RECIPE_BYTES = 1_000_000  # a recipe is a page of settings; anything bigger is a mistake (or an attack)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one) and aliases.

    Aliases (``*name``) are refused: a few of them nested can expand a small file into gigabytes.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"YAML aliases (*{event.anchor}) are not allowed in "
                                              "recipes; write the value out in full", event.start_mark)
        return super().compose_node(parent, index)


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


# ---- YAML 1.2 core schema: PyYAML reads YAML 1.1, where `1:00` is 60, `yes`/`off` are booleans, `017` is
# octal and `!!binary` text is decoded. Recipes read only the 1.2 core types.
_CORE = "tag:yaml.org,2002:"
_UniqueKeyLoader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    ("int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", "-+0123456789"),
    ("float", r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)", "-+0123456789."),
    ("null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
):
    _UniqueKeyLoader.add_implicit_resolver(_CORE + _tag, re.compile(f"^(?:{_pattern})$"), list(_first))


def _core_scalar(loader: _UniqueKeyLoader, node: yaml.ScalarNode) -> Any:
    """A bool, int or float of the YAML 1.2 core schema (also for an explicit ``!!int`` etc.)."""
    text, kind = loader.construct_scalar(node), node.tag.rsplit(":", 1)[-1]
    try:
        if kind == "bool":
            return {"true": True, "false": False}[text.lower()]
        if kind == "int":
            base = {"0o": 8, "0x": 16}.get(text[:2].lower(), 10)
            return int(text[2:] if base != 10 else text, base)
        special = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}
        return special[text.lower()] if text.lower() in special else float(text)
    except (KeyError, ValueError):
        raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not a YAML 1.2 {kind}; write it as "
                                                "plain text (quoted) or as a number", node.start_mark) from None


def _refuse_tag(loader: _UniqueKeyLoader, node: yaml.Node) -> Any:
    raise yaml.constructor.ConstructorError(None, None, f"the tag {node.tag.replace(_CORE, '!!')} is not allowed in "
                                            "recipes (only YAML 1.2 core types: text, numbers, true/false, null, "
                                            "lists and mappings); write the value as plain text", node.start_mark)


for _tag in ("bool", "int", "float"):
    _UniqueKeyLoader.add_constructor(_CORE + _tag, _core_scalar)
for _tag in ("binary", "timestamp", "set", "omap", "pairs", "merge"):
    _UniqueKeyLoader.add_constructor(_CORE + _tag, _refuse_tag)


def read_yaml(path: Path, shown: str | None = None) -> dict:
    """The YAML mapping in ``path``; syntax errors name the file, line and column."""
    shown = shown or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise InputError(f"{shown}: {size} bytes is too big for a recipe (at most {MAX_RECIPE_BYTES}); give the "
                             f"YAML recipe file, not a data file.")
        data = yaml.load(path.read_bytes().decode("utf-8"), Loader=_UniqueKeyLoader)
    except OSError as err:
        raise InputError(f"{shown}: cannot read the recipe ({err.strerror or err}).") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{shown}: not UTF-8 text (byte {err.start} is {err.object[err.start:err.start + 1]!r}); a "
                         f"recipe is a UTF-8 YAML file: re-save it as UTF-8, or check that this is the recipe.") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = err.problem or err.context
        if "not allowed in recipes" in str(problem) or "YAML 1.2" in str(problem):
            raise InputError(f"{shown}{where}: {problem}.") from None
        raise InputError(f"{shown}{where}: YAML syntax error: {problem}. Check the indentation "
                         f"there and quote values that contain ': ' or ' #'.") from None
    except yaml.YAMLError as err:
        raise InputError(f"{shown}: YAML error: {err}.") from None
    if not isinstance(data, dict):
        raise InputError(f"{shown}: a recipe is a YAML mapping that starts with 'schema_version: 1' and "
                         f"'kind: ...'; this file holds {type(data).__name__}. Start from `pyrawan recipe cp tiny x.yaml`.")
    return data


def apply_overrides(data: dict, overrides: Sequence[str]) -> tuple[dict, dict[str, str]]:
    """Apply ``key.path=value`` tokens (value parsed as YAML) to a copy; also return key -> token."""
    data, origin = copy.deepcopy(data), {}
    for token in overrides:
        key, sep, text = token.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", key):
            raise InputError(f"override '{token}' is not key.path=value; write e.g. sampling.schedule=2-2-1, "
                             f"pyramid.stages=2 or pyramid.boundaries=[0.5,0.9].")
        if len(token) > MAX_OVERRIDE_CHARS:
            raise InputError(f"override '{token[:40]}...' is {len(token)} characters long (at most "
                             f"{MAX_OVERRIDE_CHARS}); put long values in the recipe file.")
        try:
            value = yaml.load(text, Loader=_UniqueKeyLoader) if text.strip() else ""
        except yaml.YAMLError as err:
            err = getattr(err, "problem", None) or err
            raise InputError(f"override '{token}': cannot read {text!r} as a YAML value ({err}); quote strings "
                             f"that contain ': ', '#' or brackets.") from None
        _set_path(data, key.split("."), value, token)
        origin[key] = token
    return data, origin


def _set_path(data: dict, parts: list[str], value: Any, token: str) -> None:
    """``data[a][b][c] = value`` for ``parts = [a, b, c]``, creating empty sections on the way."""
    node = data
    for i, part in enumerate(parts[:-1]):
        if node.get(part) is None:
            node[part] = {}
        if not isinstance(node[part], dict):
            where = ".".join(parts[: i + 1])
            raise InputError(f"override '{token}': '{where}' is {node[part]!r}, not a section, so it has no "
                             f"key '{parts[i + 1]}'.")
        node = node[part]
    node[parts[-1]] = value


# ---- validation errors as sentences --------------------------------------------------------------

def error_lines(err: ValidationError, kinds: dict[str, type[BaseModel]], origin: dict[str, str],
                extra: Sequence[tuple[str, str]] = ()) -> list[str]:
    """One line per pydantic error, phrased with the dotted key path, then one per ``(key, message)`` in ``extra``.

    ``kinds`` maps each ``kind`` tag to its model; ``origin`` maps overridden keys to their tokens.
    """
    lines, problems = [], list(extra)
    for e in err.errors():
        if e["type"] == "recipe_rules":
            problems += e["ctx"]["problems"]
            continue
        key, model = _key_path(e["loc"], kinds)
        lines.append(_with_origin(key, _describe(e, key, model, kinds), origin))
    return lines + [_with_origin(key, msg, origin) for key, msg in problems]


def _key_path(loc: tuple, kinds: dict[str, type[BaseModel]]) -> tuple[str, type[BaseModel] | None]:
    """Dotted key for a pydantic ``loc`` (kind tag and union-member names dropped) and its parent model."""
    model: type[BaseModel] | None = kinds.get(loc[0]) if loc and isinstance(loc[0], str) else None
    parts, parent = [], model
    for part in loc[1:] if model else loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif parent is not None and part in parent.model_fields:
            parts.append(part)
            annotation = parent.model_fields[part].annotation
            model = parent
            parent = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        elif parent is not None:
            parts.append(str(part))
            model = parent
    return ".".join(parts).replace(".[", "["), model


def _describe(e: dict, key: str, model: type[BaseModel] | None, kinds: dict[str, type[BaseModel]]) -> str:
    """Human text for one pydantic error at ``key``."""
    kind, value = e["type"], _show(e.get("input"))
    if kind == "extra_forbidden":
        name = key.rsplit(".", 1)[-1]
        valid = list(model.model_fields) if model else []
        near = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
        prefix = key[: -len(name)]
        hint = f"did you mean '{prefix}{near[0]}'?" if near else f"valid keys here: {', '.join(valid)}"
        return f"unknown key '{key}' ({hint})"
    if kind == "missing":
        field = model.model_fields.get(key.rsplit(".", 1)[-1]) if model else None
        return f"missing required key '{key}'" + (f" ({field.description})" if field and field.description else "")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = e.get("ctx", {}).get("tag")
        near = difflib.get_close_matches(str(tag), list(kinds), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near and tag is not None else ""
        head = f"kind = {tag!r} is not a recipe kind{hint}" if tag is not None else "missing required key 'kind'"
        return f"{head}; use one of: {', '.join(kinds)}"
    if kind.endswith(("_type", "_parsing")):
        return f"{key} = {value} has the wrong type: {e['msg']}"
    return e["msg"] if e["msg"].startswith(key) else f"{key} = {value}: {e['msg']}"


def describe_errors(err: ValidationError, limit: int = 6) -> str:
    """``key = value: message`` for the first ``limit`` errors of a file that is not a recipe (dotted keys;
    loc parts written ``<tag>`` name a union member and are left out)."""
    parts = []
    for e in err.errors()[:limit]:
        loc = [p for p in e["loc"] if not (isinstance(p, str) and p.startswith("<"))]   # union tags
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        message = e["msg"]
        whole = not key or message.startswith(key)      # the message names its own key and value
        parts.append(message if whole else f"{key} = {_show(e.get('input'))}: {message}")
    more = len(err.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _show(value: Any, limit: int = 60) -> str:
    """Short JSON-ish rendering of a bad value."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _with_origin(key: str, message: str, origin: dict[str, str]) -> str:
    """Point at the command-line override that set ``key``, if one did."""
    token = next((t for k, t in origin.items() if key == k or key.startswith(k + ".") or k.startswith(key + ".")), None)
    return f"{message} (set by the command-line override '{token}')" if token else message


def problems_error(source: str, lines: Sequence[str]) -> InputError:
    """One ``InputError`` for all problems of a recipe: one line, or a bullet list."""
    lines = list(dict.fromkeys(lines))
    if len(lines) == 1:
        return InputError(f"{source}: {lines[0]}")
    return InputError(f"{source}: {len(lines)} problems:\n" + "\n".join(f"  - {line}" for line in lines))
