"""Default training settings per paradigm (torch-free, so the API layer can resolve configs)."""

from __future__ import annotations

from agent_training_server.engines.base import TrainSettings

DEFAULTS: dict[str, TrainSettings] = {
    "supervised": TrainSettings(),
    # Fine-tuning a pretrained encoder: few passes, a small step, and with at most 20 examples
    # per output no held-out split (validation metrics then measure fit, as documented).
    "few_shot": TrainSettings(epochs=3, learning_rate=5e-5, batch_size=16, validation_split=0.0),
    "transfer": TrainSettings(epochs=3, learning_rate=3e-5, batch_size=32, validation_split=0.1),
    "reinforcement": TrainSettings(),
}


def defaults_for(training_type: str) -> TrainSettings:
    """Return the default settings of a paradigm."""
    return DEFAULTS.get(training_type, TrainSettings())
