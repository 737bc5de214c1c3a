"""The service's state: the latest snapshots and its own allocation state, kept in memory and
rebuilt from topics on start (snapshots from the snapshot topic, the rest from its changelog)."""

from .snapshots import ApplyResult, SnapshotTable

__all__ = ["ApplyResult", "SnapshotTable"]
