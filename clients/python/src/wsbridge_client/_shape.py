"""Reading JSON answers into typed values: each reader names what it expected, so a body of
another shape is refused with a reason instead of becoming half a report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T", bound=str)


class ShapeError(ValueError):
    """A 200 body that is not the JSON its route answers."""


def json_object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ShapeError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def field(body: Mapping[str, Any], key: str, kind: type, what: str) -> Any:
    if key not in body:
        raise ShapeError(f"{what}: no {key!r}")
    value = body[key]
    # bool is an int in Python: a count must not be read from `true`.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ShapeError(f"{what}: {key!r} is not a {kind.__name__}")
    return value


def int_field(body: Mapping[str, Any], key: str, what: str) -> int:
    value: int = field(body, key, int, what)
    return value


def str_field(body: Mapping[str, Any], key: str, what: str) -> str:
    value: str = field(body, key, str, what)
    return value


def bool_field(body: Mapping[str, Any], key: str, what: str) -> bool:
    value: bool = field(body, key, bool, what)
    return value


def choice_field(body: Mapping[str, Any], key: str, choices: Sequence[T], what: str) -> T:
    """A string that must be one of ``choices`` (returned as the choice, typed as it)."""
    value = str_field(body, key, what)
    for choice in choices:
        if value == choice:
            return choice
    raise ShapeError(f"{what}: {key!r} is {value!r}, not one of {', '.join(choices)}")


def list_field(body: Mapping[str, Any], key: str, what: str) -> list[Any]:
    value: list[Any] = field(body, key, list, what)
    return value


def strings_field(body: Mapping[str, Any], key: str, what: str) -> list[str]:
    values = list_field(body, key, what)
    if not all(isinstance(v, str) for v in values):
        raise ShapeError(f"{what}: {key!r} holds something other than strings")
    return values


def optional_field(body: Mapping[str, Any], key: str, kind: type, what: str) -> Any:
    if body.get(key) is None:
        return None
    return field(body, key, kind, what)
