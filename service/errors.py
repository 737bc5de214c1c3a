"""Readable input errors: one line per problem, naming the field, never a traceback."""

from __future__ import annotations

import reprlib
from typing import Any

from pydantic import ValidationError

_UNION_TAGS = {
    "world_allocations_changed",
    "strategy_weights_updated",
    "policy_rebalance",
    "operator_command",
}
_FIELD_TAGS = {
    "trigger": {"band", "calendar", "hybrid", "regime"},
    "target": {"allocation", "weights"},
}
"""Tags of the unions inside a policy (config and events): dropped from a path only right
after the field that holds the union, since ``band`` or ``weights`` are field names too."""


class InputError(ValueError):
    """Input that cannot be used; the message says which field and why."""


_REPR = reprlib.Repr()
"""Bounded in depth: for a value nested too deep for ``repr``."""
_REPR.maxlevel = 3
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 60


SECRET_FIELDS = frozenset({"password", "key_password", "secret", "token", "tokens", "sha256"})
"""Fields whose values an error message never shows (nor a dict holding them)."""

HIDDEN = "**********"


REDACT_DEPTH = 16
"""Containers nested deeper than this are shown as ``...`` (never searched for secrets, so
never shown): hostile input nests thousands deep, and no message shows that much anyway."""


def redact(value: Any, depth: int = 0) -> Any:
    """``value`` with the values of secret fields replaced, at any depth it keeps."""
    if isinstance(value, dict | list | tuple) and depth >= REDACT_DEPTH:
        return Ellipsis
    if isinstance(value, dict):
        return {k: HIDDEN if k in SECRET_FIELDS else redact(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, depth + 1) for v in value]
    return value


def _short(value: Any) -> str:
    value = redact(value)
    try:
        text = repr(value)
    except RecursionError:
        text = _REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(error: ValidationError, prefix: str = "") -> str:
    """Render a pydantic error as ``path: message`` lines, union tags and noise removed."""
    lines = []
    for item in error.errors(include_url=False):
        loc = item["loc"]
        path = ".".join(
            str(part)
            for i, part in enumerate(loc)
            if part not in _UNION_TAGS
            and not str(part).startswith("function-")
            and not (i and part in _FIELD_TAGS.get(str(loc[i - 1]), ()))
        )
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "value_error" and ": " in message:
            lines.append(f"{prefix}{message}" if not path else f"{prefix}{path}: {message}")
            continue
        where = f"{prefix}{path}" if path else (prefix.rstrip(".") or "input")
        secret = any(str(part) in SECRET_FIELDS for part in loc)
        shown = (
            ""
            if item["type"] in {"missing", "extra_forbidden"} or secret
            else f" (got {_short(item['input'])})"
        )
        lines.append(f"{where}: {message}{shown}")
    return "; ".join(lines)


def input_error(error: ValidationError, prefix: str = "") -> InputError:
    """An ``InputError`` carrying the readable form of a validation error."""
    return InputError(describe(error, prefix))
