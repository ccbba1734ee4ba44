"""Turn pydantic validation errors into topology issues that name the key path and suggest a fix."""

from __future__ import annotations

import types
import typing
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from pipelex_pool.errors import Issue
from pipelex_pool.topology.suggest import did_you_mean


def _is_path_part(part: object) -> bool:
    # pydantic adds union-member tags such as "function-before[...]" or "literal['unlimited']" to locations
    return not (isinstance(part, str) and ("[" in part or "(" in part))


def _unwrap(tp: Any) -> Any:
    origin = get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            inner = _unwrap(arg)
            if (isinstance(inner, type) and issubclass(inner, BaseModel)) or get_origin(inner) in (
                dict,
                list,
            ):
                return inner
        return tp
    return tp


def _keys_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at `loc` inside `model`, or [] when loc does not lead to a model."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return []
            tp = field.annotation
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        elif get_origin(tp) is list:
            tp = get_args(tp)[0]
        else:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return []


def issues_from_validation(
    exc: ValidationError, model: type[BaseModel], prefix: tuple[str, ...], file: str | None = None
) -> list[Issue]:
    """One issue per key path; several union branches failing on one key are merged into one message."""
    by_path: dict[str, Issue] = {}
    for error in exc.errors():
        loc = tuple(part for part in error["loc"] if _is_path_part(part))
        path = ".".join(str(part) for part in (*prefix, *loc))
        kind = error["type"]
        if kind == "extra_forbidden":
            key = str(loc[-1]) if loc else "?"
            known = _keys_at(model, loc[:-1])
            issue = Issue(
                path,
                f"unknown key {key!r}.",
                did_you_mean(key, known, f"remove it; known keys here: {', '.join(known)}."),
                file=file,
            )
        elif kind == "missing":
            issue = Issue(path, "required key is missing.", f"add {loc[-1] if loc else 'it'} = ...", file=file)
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            value = error.get("input")
            shown = f" (got {value!r})" if isinstance(value, str | int | float | bool) else ""
            issue = Issue(path, f"{message}{shown}.".replace("..", "."), _fix_for(kind, message), file=file)
        if path in by_path and kind not in ("extra_forbidden", "missing"):
            previous = by_path[path]
            if issue.problem not in previous.problem:
                issue = Issue(path, f"{previous.problem} Or: {issue.problem}", previous.fix, file=file)
        by_path[path] = issue
    return list(by_path.values())


def _fix_for(kind: str, message: str) -> str:
    if "duration" in message or "size" in message or ";" in message:
        return ""  # our own validators already say how to write the value
    if kind.startswith("greater_than") or kind.startswith("less_than"):
        return "change the value to respect the bound."
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return "change the value's type."
    if kind == "literal_error":
        return "use one of the values listed."
    return ""
