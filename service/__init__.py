"""Centralized rebalancing: the domain (messages, planner, state, policies).

Nothing in this package talks to Kafka; the edges live in ``consumers``.
"""

__version__ = "0.1.0"
