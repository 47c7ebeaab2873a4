"""Python client of the Agent Training Service."""

from agent_training_client.client import DEFAULT_TARGET, AgentTrainingClient
from agent_training_client.credentials import TOKEN_ENV, channel_credentials, tls_credentials
from agent_training_client.errors import AgentTrainingError, FieldViolation
from agent_training_client.settings import TARGET_ENV, ClientSettings

__all__ = [
    "DEFAULT_TARGET",
    "TARGET_ENV",
    "TOKEN_ENV",
    "AgentTrainingClient",
    "AgentTrainingError",
    "ClientSettings",
    "FieldViolation",
    "channel_credentials",
    "tls_credentials",
]
