"""JSON objects carried as text on the wire (attributes, filters): one parser for every service."""

from __future__ import annotations

import json
from typing import Any

from services.common.errors import InvalidArgument


def json_object(text: str, what: str, error: type[InvalidArgument]) -> dict[str, Any]:
    """`text` as a JSON object; empty or blank text means {}. Anything else raises `error`, its message
    starting with `what` (e.g. "attributes", "filter", "item 'a1': attributes")."""
    if not text or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{what}: not valid JSON ({exc.msg} at position {exc.pos})") from exc
    if not isinstance(value, dict):
        raise error(f"{what} must be a JSON object, not {json_kind(value)}")
    return value


def json_kind(value: object) -> str:
    """What a decoded JSON value is, in JSON's words ("an array", "a string", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    names: dict[type, str] = {dict: "an object", list: "an array", str: "a string"}
    return names.get(type(value), type(value).__name__)
