"""Python client of the Agent Training Service."""

from agent_training_client.client import DEFAULT_TARGET, AgentTrainingClient
from agent_training_client.credentials import TOKEN_ENV, tls_credentials
from agent_training_client.errors import AgentTrainingError, FieldViolation

__all__ = [
    "DEFAULT_TARGET",
    "TOKEN_ENV",
    "AgentTrainingClient",
    "AgentTrainingError",
    "FieldViolation",
    "tls_credentials",
]
