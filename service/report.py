"""A plan record rendered for people: one table per world, then the global net view."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.10f}".rstrip("0").rstrip(".") if x != int(x) else f"{x:,.0f}"


def _key(item: Json) -> str:
    return f"{item['venue'] or '(no venue)'}:{item['symbol']}"


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = ["    " + line, "    " + "  ".join("-" * w for w in widths)]
    for r in rows:
        cells = [
            r[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)),
        ]
        out.append("    " + "  ".join(cells))
    return out


def _deltas(deltas: list[Json]) -> list[str]:
    rows = []
    for d in deltas:
        legs = " then ".join(
            f"{leg['leg']}{' (reduce-only)' if leg['reduce_only'] else ''}" for leg in d["legs"]
        ) or ("reduce-only" if d["reduce_only"] else "")
        rows.append(
            [
                _key(d),
                _num(d["current_qty"]),
                _num(d["target_qty"]),
                _num(d["delta_qty"]),
                _num(d["notional"]),
                legs,
            ]
        )
    return _table(rows, ["key", "current", "target", "delta", "notional", "legs"])


def _dropped(dropped: list[Json]) -> list[str]:
    return [
        f"    dropped {_key(d)}: {d['reason']} (unrounded delta {_num(d['delta_qty_unrounded'])}"
        + (f", notional {_num(d['notional'])})" if d["notional"] is not None else ")")
        for d in dropped
        if d["reason"] != "unchanged"
    ]


def render(record: Json) -> str:
    """The plan record as text: scale factors, traded keys, dropped keys, global net."""
    opts = record["options"]
    lines = [
        f"plan {record['plan_id']}  event {record['event_id']}  portfolio {record['portfolio_id']}",
        f"  total equity {_num(record['total_equity'])}; scale rule {opts['scale_rule']}, "
        f"flips {opts['flip_policy']}, mode {opts['execution_mode']}, "
        f"min notional {_num(opts['min_trade_notional'])}",
    ]
    for world in record["per_world"].values():
        scales = ", ".join(f"{s} x{g:.6g}" for s, g in world["scale_by_strategy"].items())
        lines.append("")
        lines.append(
            f"  world {world['world_id']}: allocation {_num(world['alloc_before'])} -> "
            f"{_num(world['alloc_after'])} (x{world['scale_world']:.6g}); strategies: "
            f"{scales or 'none'} [before weights from {world['weights_source']}]"
        )
        if world["deltas"]:
            lines += _deltas(world["deltas"])
            for d in world["deltas"]:
                parts = ", ".join(
                    f"{b['strategy_id']} {_num(b['delta_qty'])}" for b in d["strategy_breakdown"]
                )
                lines.append(f"    breakdown {_key(d)}: {parts}")
        else:
            lines.append("    no trades")
        lines += _dropped(world["dropped"])
    lines.append("")
    executed = "executed" if opts["execution_mode"] == "shared_account" else "not executed"
    lines.append(f"  global net across worlds ({executed} in {opts['execution_mode']} mode):")
    if record["global_deltas"]:
        lines += _deltas(record["global_deltas"])
    else:
        lines.append("    no trades")
    lines += _dropped(record["global_dropped"])
    lines.append("")
    lines.append(f"  {len(record['intent_ids'])} intents to publish")
    return "\n".join(lines) + "\n"
