"""JSON Schema of every wire message, generated from the models into ``schemas/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter

from .messages import (
    DeadLetter,
    DeltaIntent,
    NodeHeartbeat,
    Notification,
    PlanFills,
    PlanRecord,
    PolicyRebalance,
    PositionSnapshot,
)
from .messages.allocation import AllocationEvent
from .messages.command import OperatorCommand
from .request import PlanRequest, QmtlPlanRequest

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

_SOURCES: dict[str, type[BaseModel] | TypeAdapter[Any]] = {
    "position_snapshot": PositionSnapshot,
    "allocation_event": TypeAdapter(AllocationEvent),
    "policy_rebalance": PolicyRebalance,
    "operator_command": OperatorCommand,
    "delta_intent": DeltaIntent,
    "plan_record": PlanRecord,
    "dead_letter": DeadLetter,
    "node_heartbeat": NodeHeartbeat,
    "plan_fills": PlanFills,
    "notification": Notification,
    "plan_request": PlanRequest,
    "qmtl_plan_request": QmtlPlanRequest,
}


def generate() -> dict[str, bytes]:
    """File name to content for every schema, deterministic to the byte."""
    out: dict[str, bytes] = {}
    for name, source in _SOURCES.items():
        if isinstance(source, TypeAdapter):
            schema = source.json_schema()
        else:
            schema = source.model_json_schema()
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": name, **schema}
        body = orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        out[f"{name}.schema.json"] = body
    return out


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema into ``directory``; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, body in generate().items():
        path = directory / name
        path.write_bytes(body)
        written.append(path)
    return written


def stale(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing, different from the models, or unexpected."""
    expected = generate()
    problems = [
        name
        for name, body in expected.items()
        if not (directory / name).is_file() or (directory / name).read_bytes() != body
    ]
    problems += sorted(p.name for p in directory.glob("*.schema.json") if p.name not in expected)
    return problems
