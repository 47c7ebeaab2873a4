"""The scopes a token can hold and the scope each RPC needs.

docs/security.md has the same table; tests check that every RPC of the service has an entry, so
a new RPC cannot be added without deciding who may call it.
"""

from __future__ import annotations

from agent_training_server.auth.principal import ADMIN_SCOPE

SCOPES: dict[str, str] = {
    "agents:read": "read agents, their versions and analyses",
    "agents:write": "create, delete, activate and adapt agents; apply suggestions",
    "agents:invoke": "invoke agents and record feedback on their answers",
    "training:read": "read, list and watch training jobs",
    "training:write": "start and cancel training jobs",
    "data:read": "read and list datasets; generate synthetic examples without saving them",
    "data:write": "upload, save and delete datasets",
    ADMIN_SCOPE: "everything above",
}

METHOD_SCOPES: dict[str, str] = {
    "CreateAgent": "agents:write",
    "GetAgent": "agents:read",
    "ListAgents": "agents:read",
    "DeleteAgent": "agents:write",
    "ListAgentVersions": "agents:read",
    "ActivateAgentVersion": "agents:write",
    "StartRollout": "agents:write",
    "GetRollout": "agents:read",
    "UpdateRollout": "agents:write",
    "PromoteRollout": "agents:write",
    "AbortRollout": "agents:write",
    "AdaptAgentBehavior": "agents:write",
    "AnalyzeAndOptimize": "agents:read",
    "AnalyzeAndOptimizeStream": "agents:read",
    "GetAnalysisJob": "agents:read",
    "WatchAnalysisJob": "agents:read",
    "InvokeAgent": "agents:invoke",
    "RecordFeedback": "agents:invoke",
    "TrainAgent": "training:write",
    "CancelTrainingJob": "training:write",
    "GetTrainingJob": "training:read",
    "ListTrainingJobs": "training:read",
    "WatchTrainingJob": "training:read",
    "PauseTrainingJob": "training:write",
    "ResumeTrainingJob": "training:write",
    "ListTrainingCheckpoints": "training:read",
    "CreateVersionFromCheckpoint": "training:write",
    "ExportAgentVersion": "agents:read",
    "GenerateSyntheticTrainingData": "data:read",
    "GenerateSyntheticExamples": "data:read",
    "UploadDataset": "data:write",
    "GetDataset": "data:read",
    "ListDatasets": "data:read",
    "ListDatasetExamples": "data:read",
    "DeleteDataset": "data:write",
}
"""RPC name -> scope it needs. Requests that also write (a suggestion applied, generated
examples saved as a dataset) need a second scope, checked by their handlers."""


def check_scopes(scopes: list[str] | tuple[str, ...] | set[str], where: str) -> frozenset[str]:
    """Return ``scopes`` as a set, refusing names not in SCOPES (a typo would deny silently).

    Raises:
        ValueError: an unknown scope, naming ``where`` it was found.
    """
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"{where}: unknown scopes {unknown}; known: {sorted(SCOPES)}")
    return frozenset(scopes)
