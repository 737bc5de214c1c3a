"""Policies written as short strings, for the command line.

``[NAME=]TRIGGER``, where TRIGGER is one of: ``none`` (buy and hold); a cadence (``daily``,
``weekly``, ``biweekly``, ``monthly``, ``quarterly``, ``yearly``); ``band:5%`` (relative
band; ``0.05`` works too) or ``band-abs:5%`` (absolute, in weight points);
``hybrid:monthly:5%`` (look monthly, act outside a relative 5 % band); ``smart`` (the
volatility regimes of ``policies.regimes``).
"""

from __future__ import annotations

from ..policies.calendar import CADENCES, cadence
from ..policies.errors import PolicyError
from ..policies.regimes import VolatilityRegimes
from ..policies.triggers import BandMode, Calendar, DriftBand, Hybrid, Never, Trigger

DEFAULT_POLICIES = ("none", "monthly", "band:5%", "smart")


def _fraction(text: str, spec: str) -> float:
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise PolicyError(f"policy {spec!r}: {text!r} is not a number or a percentage") from None
    return value


def trigger(text: str) -> Trigger:
    """The trigger a spec names (without the ``NAME=`` part)."""
    parts = [p.strip() for p in text.strip().lower().split(":")]
    head = parts[0]
    try:
        if head in ("none", "buy-and-hold", "hold") and len(parts) == 1:
            return Never()
        if head in ("smart", "regime") and len(parts) == 1:
            return VolatilityRegimes()
        if head in ("band", "band-abs") and len(parts) == 2:
            mode: BandMode = "absolute" if head == "band-abs" else "relative"
            return DriftBand(_fraction(parts[1], text), mode=mode)
        if head == "hybrid" and len(parts) == 3:
            return Hybrid(Calendar(cadence(parts[1])), DriftBand(_fraction(parts[2], text)))
        if len(parts) == 1 and head.replace("-", "") in CADENCES:
            return Calendar(cadence(head))
    except PolicyError as exc:
        raise PolicyError(f"policy {text!r}: {exc}") from None
    raise PolicyError(
        f"policy {text!r}: not understood; use none, a cadence ({', '.join(CADENCES)}), "
        "band:5%, band-abs:5%, hybrid:monthly:5% or smart"
    )


def parse(spec: str) -> tuple[str, Trigger]:
    """``NAME=TRIGGER`` or ``TRIGGER`` (then the name is the spec itself)."""
    name, sep, body = spec.partition("=")
    if not sep:
        name, body = spec.strip(), spec
    name = name.strip()
    if not name:
        raise PolicyError(f"policy {spec!r}: empty name")
    return name, trigger(body)
