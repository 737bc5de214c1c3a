"""The checked-in JSON Schemas must match the models they are generated from."""

from __future__ import annotations

from pathlib import Path

import orjson

from service import schemas
from service.cli import main


def test_checked_in_schemas_match_the_models() -> None:
    stale = schemas.stale()
    assert stale == [], f"stale schemas {stale}: run 'rebalancer schemas' and commit them"


def test_a_drifted_schema_is_detected(tmp_path: Path) -> None:
    schemas.write(tmp_path)
    assert schemas.stale(tmp_path) == []
    target = tmp_path / "delta_intent.schema.json"
    body = orjson.loads(target.read_bytes())
    del body["properties"]["reduce_only"]
    target.write_bytes(orjson.dumps(body))
    (tmp_path / "left_over.schema.json").write_text("{}")
    assert schemas.stale(tmp_path) == ["delta_intent.schema.json", "left_over.schema.json"]
    assert main(["schemas", "--check", "--out", str(tmp_path)]) == 1
    assert main(["schemas", "--out", str(tmp_path)]) == 0
    (tmp_path / "left_over.schema.json").unlink()
    assert main(["schemas", "--check", "--out", str(tmp_path)]) == 0


def test_schemas_state_the_rules() -> None:
    snapshot = orjson.loads((schemas.SCHEMA_DIR / "position_snapshot.schema.json").read_bytes())
    position = snapshot["$defs"]["Position"]["properties"]
    assert position["mark"]["anyOf"][0]["exclusiveMinimum"] == 0
    event = orjson.loads((schemas.SCHEMA_DIR / "allocation_event.schema.json").read_bytes())
    assert set(event["discriminator"]["mapping"]) == {
        "world_allocations_changed",
        "strategy_weights_updated",
    }
