"""The backtester (SPEC 6): policies over a price history, side by side."""

from .engine import Backtest, Policy, Run, backtest
from .metrics import PerformanceMetrics
from .prices import PriceTable
from .report import chart, markdown, table

__all__ = [
    "Backtest",
    "PerformanceMetrics",
    "Policy",
    "PriceTable",
    "Run",
    "backtest",
    "chart",
    "markdown",
    "table",
]
