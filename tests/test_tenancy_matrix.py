"""The tenancy matrix: every RPC of the service, called by tenant B on tenant A's objects.

The RPCs are listed from the service descriptor, so a new RPC without an entry here fails. For
each probe tenant B gets NOT_FOUND exactly as for an id that does not exist (same status, code,
message and hint), or an empty list; tenant A's objects are unchanged afterwards. Every RPC
refuses a token that lacks its scope (PERMISSION_DENIED) and a call without a token
(UNAUTHENTICATED).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from agent_training.v1 import (
    adaptation_pb2,
    rollouts_pb2,
    service_pb2,
    service_pb2_grpc,
    synthetic_pb2,
    training_pb2,
)
from agent_training_client import AgentTrainingError
from agent_training_server.auth.scopes import METHOD_SCOPES, SCOPES
from tests.conftest import ServerThread, assert_status, make_config
from tests.security_support import write_token_file

SERVICE = service_pb2.DESCRIPTOR.services_by_name["AgentTrainingService"]
TOKEN_A = "tenant-a-admin-token-000"
TOKEN_B = "tenant-b-admin-token-000"
LACKING = {scope: f"tenant-a-lacks-{scope.replace(':', '-')}-token" for scope in SCOPES}
EXAMPLES = [
    training_pb2.TrainingExample(input=text, expected_output=output)
    for output, texts in {
        "card_arrival": ["where is my card", "my card has not arrived", "card still not here"],
        "lost_card": ["I lost my card", "my card was stolen", "cannot find my card"],
        "refund": ["I want a refund", "give my money back", "refund my payment"],
    }.items()
    for text in texts
]


@dataclasses.dataclass
class Objects:
    """Tenant A's objects (and B's own agent, for probes that mix B's and A's ids)."""

    agent: str
    version: str
    job: str
    dataset: str
    invocation: str
    analysis: str
    b_agent: str

    def missing(self) -> Objects:
        """The same ids with every one of A's replaced by an id that exists nowhere."""
        return Objects(
            agent="no-such-agent",
            version="ver_00000000deadbeef",
            job="train_00000000deadbeef",
            dataset="ds_00000000deadbeef",
            invocation="inv_00000000deadbeef",
            analysis="analysis_00000000deadbeef",
            b_agent=self.b_agent,
        )


class Caller:
    """Raw stub calls with a bearer token (or none), any RPC by name."""

    def __init__(self, channel: grpc.Channel, token: str | None) -> None:
        self._stub = service_pb2_grpc.AgentTrainingServiceStub(channel)
        self._metadata = [("authorization", f"Bearer {token}")] if token else []

    def __call__(self, rpc: str, request: Any) -> Any:
        method = SERVICE.methods_by_name[rpc]
        call = getattr(self._stub, rpc)
        try:
            if method.client_streaming:
                return call(iter([request]), metadata=self._metadata, timeout=60)
            if method.server_streaming:
                return list(call(request, metadata=self._metadata, timeout=60))
            return call(request, metadata=self._metadata, timeout=60)
        except grpc.RpcError as error:
            raise AgentTrainingError.from_rpc_error(error) from None


Probe = Callable[[Objects], Any]


def _generate(**fields: Any) -> service_pb2.GenerateSyntheticTrainingDataRequest:
    return service_pb2.GenerateSyntheticTrainingDataRequest(count=5, **fields)


# RPC -> probes whose request names A's objects; B must get NOT_FOUND as for a missing id.
NOT_FOUND_PROBES: dict[str, list[Probe]] = {
    "GetAgent": [lambda o: service_pb2.GetAgentRequest(agent_id=o.agent)],
    "DeleteAgent": [lambda o: service_pb2.DeleteAgentRequest(agent_id=o.agent, force=True)],
    "ListAgentVersions": [lambda o: service_pb2.ListAgentVersionsRequest(agent_id=o.agent)],
    "ActivateAgentVersion": [
        lambda o: service_pb2.ActivateAgentVersionRequest(agent_id=o.agent, version_id=o.version)
    ],
    "TrainAgent": [
        lambda o: service_pb2.TrainAgentRequest(agent_id=o.agent, training_data=EXAMPLES),
        lambda o: service_pb2.TrainAgentRequest(agent_id=o.b_agent, dataset_id=o.dataset),
        lambda o: service_pb2.TrainAgentRequest(
            agent_id=o.b_agent,
            training_data=EXAMPLES,
            training_type=training_pb2.TRAINING_TYPE_TRANSFER,
            config=training_pb2.TrainingConfig(base_agent_id=o.agent),
        ),
    ],
    "StartRollout": [
        lambda o: service_pb2.StartRolloutRequest(
            agent_id=o.agent, candidate_version_id=o.version, mode=rollouts_pb2.ROLLOUT_MODE_SHADOW
        )
    ],
    "GetRollout": [lambda o: service_pb2.GetRolloutRequest(agent_id=o.agent)],
    "UpdateRollout": [
        lambda o: service_pb2.UpdateRolloutRequest(agent_id=o.agent, remove_policy=True)
    ],
    "PromoteRollout": [lambda o: service_pb2.PromoteRolloutRequest(agent_id=o.agent)],
    "AbortRollout": [lambda o: service_pb2.AbortRolloutRequest(agent_id=o.agent)],
    "GetTrainingJob": [lambda o: service_pb2.GetTrainingJobRequest(training_id=o.job)],
    "CancelTrainingJob": [lambda o: service_pb2.CancelTrainingJobRequest(training_id=o.job)],
    "WatchTrainingJob": [lambda o: service_pb2.WatchTrainingJobRequest(training_id=o.job)],
    "PauseTrainingJob": [lambda o: service_pb2.PauseTrainingJobRequest(training_id=o.job)],
    "ResumeTrainingJob": [lambda o: service_pb2.ResumeTrainingJobRequest(training_id=o.job)],
    "ListTrainingCheckpoints": [
        lambda o: service_pb2.ListTrainingCheckpointsRequest(training_id=o.job)
    ],
    "CreateVersionFromCheckpoint": [
        lambda o: service_pb2.CreateVersionFromCheckpointRequest(
            training_id=o.job, checkpoint_id="epoch-1", activate=True
        )
    ],
    "ExportAgentVersion": [
        lambda o: service_pb2.ExportAgentVersionRequest(agent_id=o.agent),
        lambda o: service_pb2.ExportAgentVersionRequest(agent_id=o.agent, version_id=o.version),
        lambda o: service_pb2.ExportAgentVersionRequest(agent_id=o.b_agent, version_id=o.version),
    ],
    "InvokeAgent": [lambda o: service_pb2.InvokeAgentRequest(agent_id=o.agent, input="my card")],
    "RecordFeedback": [
        lambda o: service_pb2.RecordFeedbackRequest(
            agent_id=o.agent, invocation_id=o.invocation, feedback="incorrect"
        ),
        lambda o: service_pb2.RecordFeedbackRequest(
            agent_id=o.b_agent, invocation_id=o.invocation, feedback="incorrect"
        ),
    ],
    "AnalyzeAndOptimize": [
        lambda o: service_pb2.AnalyzeAndOptimizeRequest(agent_id=o.agent),
        lambda o: service_pb2.AnalyzeAndOptimizeRequest(agent_id=o.b_agent, dataset_id=o.dataset),
    ],
    "AnalyzeAndOptimizeStream": [
        lambda o: service_pb2.AnalyzeAndOptimizeStreamRequest(
            request=service_pb2.AnalyzeAndOptimizeRequest(agent_id=o.agent)
        ),
        lambda o: service_pb2.AnalyzeAndOptimizeStreamRequest(
            request=service_pb2.AnalyzeAndOptimizeRequest(agent_id=o.b_agent, dataset_id=o.dataset)
        ),
    ],
    "GetAnalysisJob": [lambda o: service_pb2.GetAnalysisJobRequest(analysis_id=o.analysis)],
    "WatchAnalysisJob": [lambda o: service_pb2.WatchAnalysisJobRequest(analysis_id=o.analysis)],
    "AdaptAgentBehavior": [
        lambda o: service_pb2.AdaptAgentBehaviorRequest(
            agent_id=o.agent,
            adaptation_strategy=adaptation_pb2.ADAPTATION_STRATEGY_THRESHOLD,
            performance_metrics={"success_rate": 0.5},
        )
    ],
    "GenerateSyntheticTrainingData": [
        lambda o: _generate(
            data_type=synthetic_pb2.SYNTHETIC_DATA_TYPE_FEEDBACK_LOGS,
            parameters=synthetic_pb2.SyntheticDataParameters(agent_id=o.agent),
        ),
        lambda o: _generate(
            data_type=synthetic_pb2.SYNTHETIC_DATA_TYPE_PARAPHRASES,
            parameters=synthetic_pb2.SyntheticDataParameters(dataset_id=o.dataset),
        ),
    ],
    "GenerateSyntheticExamples": [
        lambda o: service_pb2.GenerateSyntheticExamplesRequest(
            count=5,
            data_type=synthetic_pb2.SYNTHETIC_DATA_TYPE_CUSTOMER_QUERIES,
            parameters=synthetic_pb2.SyntheticDataParameters(target_agent_id=o.agent),
        )
    ],
    "GetDataset": [lambda o: service_pb2.GetDatasetRequest(dataset_id=o.dataset)],
    "ListDatasetExamples": [lambda o: service_pb2.ListDatasetExamplesRequest(dataset_id=o.dataset)],
    "DeleteDataset": [lambda o: service_pb2.DeleteDatasetRequest(dataset_id=o.dataset)],
}

# RPC -> (request, what B's answer lists): B sees none of A's objects.
LIST_PROBES: dict[str, list[tuple[Probe, Callable[[Any], list]]]] = {
    "ListAgents": [(lambda o: service_pb2.ListAgentsRequest(), lambda r: list(r.agents))],
    "ListDatasets": [(lambda o: service_pb2.ListDatasetsRequest(), lambda r: list(r.datasets))],
    "ListTrainingJobs": [
        (lambda o: service_pb2.ListTrainingJobsRequest(), lambda r: list(r.jobs)),
        (lambda o: service_pb2.ListTrainingJobsRequest(agent_id=o.agent), lambda r: list(r.jobs)),
    ],
}

# RPCs that name no existing object: B creates its own, which A must not see.
OWN_PROBES: dict[str, Probe] = {
    "CreateAgent": lambda o: service_pb2.CreateAgentRequest(agent_id="b-created"),
    "UploadDataset": lambda o: service_pb2.UploadDatasetRequest(
        name="b-upload", examples=EXAMPLES[:3]
    ),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, Objects]]:
    folder = tmp_path_factory.mktemp("tenancy")
    tokens = {TOKEN_A: ("tenant-a", ["admin"]), TOKEN_B: ("tenant-b", ["admin"])}
    for scope, token in LACKING.items():
        tokens[token] = ("tenant-a", [s for s in SCOPES if s not in (scope, "admin")])
    token_file = write_token_file(folder / "tokens.json", tokens)
    server = ServerThread(make_config(folder, auth_token_file=str(token_file)))
    with grpc.insecure_channel(server.address) as channel:
        yield server, _tenant_a_objects(Caller(channel, TOKEN_A), Caller(channel, TOKEN_B))
    server.stop()


def _tenant_a_objects(a: Caller, b: Caller) -> Objects:
    a("CreateAgent", service_pb2.CreateAgentRequest(agent_id="a-bot"))
    events = a(
        "TrainAgent",
        service_pb2.TrainAgentRequest(
            agent_id="a-bot",
            training_data=EXAMPLES,
            config=training_pb2.TrainingConfig(epochs=1, validation_split=0.0),
        ),
    )
    finished = events[-1].event.finished
    assert finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED, finished
    answer = a("InvokeAgent", service_pb2.InvokeAgentRequest(agent_id="a-bot", input="my card"))
    dataset = a(
        "UploadDataset", service_pb2.UploadDatasetRequest(name="a-data", examples=EXAMPLES)
    ).dataset
    analysis = a(
        "AnalyzeAndOptimizeStream",
        service_pb2.AnalyzeAndOptimizeStreamRequest(
            request=service_pb2.AnalyzeAndOptimizeRequest(
                agent_id="a-bot", evaluation_data=EXAMPLES
            )
        ),
    )
    assert analysis[-1].HasField("result"), analysis[-1]
    b("CreateAgent", service_pb2.CreateAgentRequest(agent_id="b-bot"))
    return Objects(
        agent="a-bot",
        version=finished.version_id,
        job=events[0].event.training_id,
        dataset=dataset.dataset_id,
        invocation=answer.predictions[0].invocation_id,
        analysis=analysis[0].accepted.analysis_id,
        b_agent="b-bot",
    )


def _snapshot(a: Caller, o: Objects) -> list[bytes]:
    """Everything tenant A can read about its objects, serialised."""
    reads = [
        ("GetAgent", service_pb2.GetAgentRequest(agent_id=o.agent)),
        ("ListAgents", service_pb2.ListAgentsRequest()),
        ("ListAgentVersions", service_pb2.ListAgentVersionsRequest(agent_id=o.agent)),
        ("GetTrainingJob", service_pb2.GetTrainingJobRequest(training_id=o.job)),
        ("ListTrainingJobs", service_pb2.ListTrainingJobsRequest()),
        ("GetDataset", service_pb2.GetDatasetRequest(dataset_id=o.dataset)),
        ("ListDatasets", service_pb2.ListDatasetsRequest()),
        ("ListDatasetExamples", service_pb2.ListDatasetExamplesRequest(dataset_id=o.dataset)),
        ("GetAnalysisJob", service_pb2.GetAnalysisJobRequest(analysis_id=o.analysis)),
    ]
    return [a(rpc, request).SerializeToString(deterministic=True) for rpc, request in reads]


def _error(call: Callable[[], Any]) -> AgentTrainingError:
    with pytest.raises(AgentTrainingError) as caught:
        call()
    return caught.value


def test_the_matrix_covers_every_rpc() -> None:
    rpcs = {method.name for method in SERVICE.methods}
    covered = set(NOT_FOUND_PROBES) | set(LIST_PROBES) | set(OWN_PROBES)
    assert covered == rpcs, f"no tenancy probe for {rpcs - covered}; stale: {covered - rpcs}"
    assert not set(NOT_FOUND_PROBES) & set(LIST_PROBES) & set(OWN_PROBES)


def test_another_tenant_reads_and_writes_nothing_of_tenant_a(
    world: tuple[ServerThread, Objects],
) -> None:
    server, objects = world
    with grpc.insecure_channel(server.address) as channel:
        a, b = Caller(channel, TOKEN_A), Caller(channel, TOKEN_B)
        before = _snapshot(a, objects)
        for rpc, probes in NOT_FOUND_PROBES.items():
            for index, probe in enumerate(probes):
                hidden = _error(lambda: b(rpc, probe(objects)))  # noqa: B023
                missing = _error(lambda: b(rpc, probe(objects.missing())))  # noqa: B023
                where = f"{rpc} probe {index}"
                assert_status(hidden, grpc.StatusCode.NOT_FOUND)
                assert _masked(hidden, objects) == _masked(missing, objects.missing()), where
        for rpc, probes in LIST_PROBES.items():
            for probe, listed in probes:
                items = listed(b(rpc, probe(objects)))
                assert not [item for item in items if _names_a_object(item, objects)], rpc
        for rpc, probe in OWN_PROBES.items():
            b(rpc, probe(objects))
        assert _snapshot(a, objects) == before
        # B's failed feedback stored nothing: A's feedback on the answer is the first.
        recorded = a(
            "RecordFeedback",
            service_pb2.RecordFeedbackRequest(
                agent_id=objects.agent, invocation_id=objects.invocation, feedback="correct"
            ),
        )
        assert not recorded.duplicate


def _names_a_object(item: Any, objects: Objects) -> bool:
    text = str(item)
    return any(f'"{name}"' in text for name in (objects.agent, objects.job, objects.dataset))


def _masked(error: AgentTrainingError, objects: Objects) -> tuple[Any, ...]:
    """The error with the ids it names replaced, to compare with a missing id's error."""
    message = error.message.split(" (trace_id=")[0]
    for field in dataclasses.fields(Objects):
        message = message.replace(getattr(objects, field.name), f"<{field.name}>")
    return error.status_code, error.code, message, error.hint, error.retryable


def _requests(objects: Objects) -> dict[str, Any]:
    """One request per RPC, for the scope and token checks (refused before it is read)."""
    requests = {rpc: probes[0](objects) for rpc, probes in NOT_FOUND_PROBES.items()}
    requests.update({rpc: probes[0][0](objects) for rpc, probes in LIST_PROBES.items()})
    requests.update({rpc: probe(objects) for rpc, probe in OWN_PROBES.items()})
    return requests


def test_every_rpc_needs_its_scope_and_a_token(world: tuple[ServerThread, Objects]) -> None:
    server, objects = world
    with grpc.insecure_channel(server.address) as channel:
        before = _snapshot(Caller(channel, TOKEN_A), objects)
        anonymous = Caller(channel, None)
        for rpc, request in _requests(objects).items():
            lacking = Caller(channel, LACKING[METHOD_SCOPES[rpc]])
            denied = _error(lambda: lacking(rpc, request))  # noqa: B023
            assert_status(denied, grpc.StatusCode.PERMISSION_DENIED)
            assert denied.code == "SCOPE_MISSING", rpc
            refused = _error(lambda: anonymous(rpc, request))  # noqa: B023
            assert_status(refused, grpc.StatusCode.UNAUTHENTICATED)
        assert _snapshot(Caller(channel, TOKEN_A), objects) == before


def test_writes_within_a_read_rpc_need_the_write_scope(
    world: tuple[ServerThread, Objects],
) -> None:
    server, objects = world
    with grpc.insecure_channel(server.address) as channel:
        no_data_write = Caller(channel, LACKING["data:write"])
        request = service_pb2.GenerateSyntheticExamplesRequest(
            count=5,
            data_type=synthetic_pb2.SYNTHETIC_DATA_TYPE_CUSTOMER_QUERIES,
            save_as="sneaky",
        )
        denied = _error(lambda: no_data_write("GenerateSyntheticExamples", request))
        assert_status(denied, grpc.StatusCode.PERMISSION_DENIED)
        request.ClearField("save_as")
        assert len(no_data_write("GenerateSyntheticExamples", request).examples) == 5
        no_agent_write = Caller(channel, LACKING["agents:write"])
        apply = service_pb2.AnalyzeAndOptimizeRequest(
            agent_id=objects.agent, apply_suggestion_id="sug_x"
        )
        denied = _error(lambda: no_agent_write("AnalyzeAndOptimize", apply))
        assert_status(denied, grpc.StatusCode.PERMISSION_DENIED)


def test_tenant_a_still_sees_its_objects(world: tuple[ServerThread, Objects]) -> None:
    server, objects = world
    with grpc.insecure_channel(server.address) as channel:
        a = Caller(channel, TOKEN_A)
        agents = [
            agent.agent_id for agent in a("ListAgents", service_pb2.ListAgentsRequest()).agents
        ]
        assert agents == [objects.agent]
        datasets = a("ListDatasets", service_pb2.ListDatasetsRequest()).datasets
        assert [d.name for d in datasets] == ["a-data"]
        jobs = a("ListTrainingJobs", service_pb2.ListTrainingJobsRequest()).jobs
        assert [job.training_id for job in jobs] == [objects.job]
