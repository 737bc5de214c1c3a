"""Backtest results for people: a side-by-side table and a chart of equity and drawdowns."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .engine import Run

COLUMNS = (
    ("policy", "policy", "{}"),
    ("total_return", "total return", "{:+.1%}"),
    ("cagr", "CAGR", "{:+.2%}"),
    ("volatility", "volatility", "{:.2%}"),
    ("sharpe", "Sharpe", "{:.3f}"),
    ("max_drawdown", "max drawdown", "{:.1%}"),
    ("turnover", "turnover/yr", "{:.2f}"),
    ("rebalances", "rebalances", "{:d}"),
    ("total_cost", "total cost", "{:,.0f}"),
)


def _cell(fmt: str, value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return fmt.format(value)


def rows(runs: Sequence[Run]) -> list[list[str]]:
    """The table's cells, header first."""
    out = [[title for _, title, _ in COLUMNS]]
    for run in runs:
        summary = run.summary()
        out.append([_cell(fmt, summary[key]) for key, _, fmt in COLUMNS])
    return out


def table(runs: Sequence[Run]) -> str:
    """A plain-text table, one row per policy, numbers right-aligned."""
    cells = rows(runs)
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = []
    for k, r in enumerate(cells):
        parts = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def markdown(runs: Sequence[Run]) -> str:
    """The same table in Markdown."""
    cells = rows(runs)
    head = "| " + " | ".join(cells[0]) + " |"
    rule = "|---|" + "---:|" * (len(COLUMNS) - 1)
    body = ["| " + " | ".join(r) + " |" for r in cells[1:]]
    return "\n".join([head, rule, *body]) + "\n"


def chart(runs: Sequence[Run], path: str | Path, title: str = "", *, dpi: int = 90) -> Path:
    """Equity curves (log scale) over drawdowns, one line per policy, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 6.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    for run in runs:
        dates = run.dates.astype("datetime64[D]").tolist()
        top.plot(dates, run.equity / run.equity[0], linewidth=0.9, label=run.policy)
        bottom.plot(dates, run.drawdown * 100.0, linewidth=0.8, label=run.policy)
    top.set_yscale("log")
    top.set_ylabel("growth of 1 (log)")
    top.grid(True, which="major", alpha=0.3)
    top.legend(loc="upper left", fontsize=8)
    bottom.set_ylabel("drawdown %")
    bottom.grid(True, alpha=0.3)
    if title:
        top.set_title(title, fontsize=10)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out
