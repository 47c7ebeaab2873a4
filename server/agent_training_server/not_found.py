"""The NotFound error of each resource: one message, code and hint wherever it is raised.

The store raises these for a missing row (and, with tenancy, for another tenant's row, which
its query does not find either); services and handlers raise the same ones, so a caller sees
one error per resource whichever layer noticed.
"""

from __future__ import annotations

from agent_training_server.errors import NotFound


def agent_not_found(agent_id: str) -> NotFound:
    """The error for an agent that does not exist (or is another tenant's)."""
    return NotFound(
        f"agent {agent_id!r} does not exist",
        code="AGENT_NOT_FOUND",
        hint="Check the agent_id, or CreateAgent first; ListAgents shows existing agents.",
    )


def version_not_found(agent_id: str, version_id: str) -> NotFound:
    """The error for a version an agent does not have."""
    return NotFound(
        f"agent {agent_id!r} has no version {version_id!r}",
        code="VERSION_NOT_FOUND",
        hint="ListAgentVersions shows the agent's versions.",
    )


def training_job_not_found(training_id: str) -> NotFound:
    """The error for an unknown training job (also for another tenant's)."""
    return NotFound(
        f"training job {training_id!r} does not exist",
        code="TRAINING_JOB_NOT_FOUND",
        hint="Check the training_id; ListTrainingJobs shows the jobs of an agent.",
    )


def analysis_not_found(analysis_id: str) -> NotFound:
    """The error for an unknown analysis job (also for another tenant's)."""
    return NotFound(
        f"analysis job {analysis_id!r} does not exist",
        code="ANALYSIS_NOT_FOUND",
        hint="Use the analysis_id from AnalyzeAndOptimizeStream's first message.",
    )


def dataset_not_found(dataset_id: str) -> NotFound:
    """The error for an unknown named dataset (also for another tenant's)."""
    return NotFound(
        f"dataset {dataset_id!r} does not exist",
        code="DATASET_NOT_FOUND",
        hint="ListDatasets shows the stored datasets.",
    )


def invocation_not_found(invocation_id: str) -> NotFound:
    """The error for an unknown invocation (also for another tenant's)."""
    return NotFound(
        f"invocation {invocation_id!r} is not known",
        code="INVOCATION_NOT_FOUND",
        hint="Pass an invocation_id from an InvokeAgent answer of this agent.",
    )


def rollout_not_found(agent_id: str, rollout_id: str = "") -> NotFound:
    """The error for a rollout the agent does not have (``""``: the agent has none at all)."""
    if not rollout_id:
        return NotFound(
            f"agent {agent_id!r} has no rollout",
            code="ROLLOUT_NOT_FOUND",
            hint="StartRollout starts one with a candidate version of the agent.",
        )
    return NotFound(
        f"agent {agent_id!r} has no rollout {rollout_id!r}",
        code="ROLLOUT_NOT_FOUND",
        hint="Check the rollout_id; GetRollout without one reads the agent's running or latest"
        " rollout.",
    )
