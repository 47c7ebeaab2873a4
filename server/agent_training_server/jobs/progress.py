"""Percent done and time left, from an engine's progress report (pure functions)."""

from __future__ import annotations

from typing import Any

TRAINING_SHARE = (2.0, 95.0)
"""Percent range the training phase covers; loading before it, evaluating and saving after."""
PHASE_PERCENT = {"loading_data": 1.0, "loading_encoder": 1.5, "evaluating": 96.0, "saving": 98.0}


def percent_and_eta(update: dict[str, Any], elapsed_seconds: float) -> tuple[float, float | None]:
    """Return (percent complete, estimated seconds left or None when unknown)."""
    phase = update.get("phase", "")
    if phase != "training":
        return PHASE_PERCENT.get(phase, 0.0), None
    step, total = update.get("step", 0), update.get("total_steps", 0)
    if total <= 0:
        return TRAINING_SHARE[0], None
    fraction = min(1.0, step / total)
    low, high = TRAINING_SHARE
    percent = low + (high - low) * fraction
    if step <= 0 or elapsed_seconds <= 0:
        return percent, None
    # Early stopping can end sooner, so this is an upper bound; it is what users plan with.
    eta = elapsed_seconds / fraction * (1.0 - fraction)
    return percent, eta
