"""Live policies: the runner that lets the policy layer drive the stream service (SPEC 6).

``config`` (the ``policies`` settings), ``runner`` (the decisions, pure: which worlds trigger,
with which event), ``sampling`` (bounded mark samples per world), ``estimate`` (a risk-based
target's weights from them, by the backtester's functions), ``outlook`` (what reads show).
"""
