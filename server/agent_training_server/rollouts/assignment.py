"""Which arm of a canary rollout answers a call.

With an assignment key (a conversation or customer id) the arm is a hash of the rollout id and
the key: the same key gets the same arm for the whole rollout (a customer does not see answers
flip between versions), and keys spread over the arms in the rollout's shares. Without one each
call is assigned at random. Either way the arm's probability, its share, is what an off-policy
estimate needs and what the answer's propensity records (times the behaviour's own).
"""

from __future__ import annotations

import hashlib
import random

from agent_training_server.domain import Rollout, RolloutMode

ACTIVE = "active"
CANDIDATE = "candidate"
SHADOW = "shadow"


def unit_interval(rollout_id: str, key: str) -> float:
    """A number in [0, 1) fixed by the rollout and the key, uniform over keys."""
    digest = hashlib.sha256(f"{rollout_id}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def arm_for(rollout: Rollout, key: str, rng: random.Random) -> tuple[str, float]:
    """(arm, its probability) for a call; shadow rollouts answer with the active arm."""
    if rollout.mode == RolloutMode.SHADOW:
        return ACTIVE, 1.0
    draw = unit_interval(rollout.rollout_id, key) if key else rng.random()
    if draw < rollout.traffic_share:
        return CANDIDATE, rollout.traffic_share
    return ACTIVE, 1.0 - rollout.traffic_share
