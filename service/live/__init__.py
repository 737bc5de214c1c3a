"""Live policies: the runner that lets the policy layer drive the stream service (SPEC 6).

``config`` (the ``policies`` settings), ``measure`` (a world's weights from the snapshot
table), ``runner`` (the decisions, pure: which worlds trigger, with which event).
"""
