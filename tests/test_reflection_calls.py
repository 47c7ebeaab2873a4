"""Calls made with nothing but server reflection, as grpcurl or `buf curl` make them: the
descriptors come from the server, the messages are built from JSON, no generated code is used."""

from __future__ import annotations

import json
import subprocess

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from google.rpc import status_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from agent_training.v1 import service_pb2
from tests.conftest import REPO_ROOT, ServerThread

SERVICE = "agent_training.v1.AgentTrainingService"


class ReflectedService:
    """A service known only through reflection: call any method with a JSON request."""

    def __init__(self, channel: grpc.Channel, name: str) -> None:
        self._channel = channel
        self._pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        self.descriptor = self._pool.FindServiceByName(name)

    def methods(self) -> dict[str, str]:
        """Method name -> kind, as `grpcurl describe` shows them."""
        kinds = {(False, False): "unary", (False, True): "server_streaming"}
        kinds |= {(True, False): "client_streaming", (True, True): "bidi_streaming"}
        return {
            method.name: kinds[(method.client_streaming, method.server_streaming)]
            for method in self.descriptor.methods
        }

    def call(self, method_name: str, request_json: dict) -> list[dict]:
        """Send one JSON request; return the responses as JSON (one for a unary method)."""
        method = self.descriptor.methods_by_name[method_name]
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        path = f"/{self.descriptor.full_name}/{method.name}"
        kind = self._channel.unary_stream if method.server_streaming else self._channel.unary_unary
        stub = kind(
            path,
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        request = json_format.ParseDict(request_json, request_class())
        responses = stub(request, timeout=30)
        responses = responses if method.server_streaming else [responses]
        return [json_format.MessageToDict(response) for response in responses]


def test_lists_every_method_and_calls_them_by_json(server: ServerThread) -> None:
    with grpc.insecure_channel(server.address) as channel:
        service = ReflectedService(channel, SERVICE)
        methods = service.methods()
        assert set(methods) == set(
            service_pb2.DESCRIPTOR.services_by_name["AgentTrainingService"].methods_by_name
        )
        assert methods["TrainAgent"] == "server_streaming"
        assert methods["UploadDataset"] == "client_streaming"
        assert methods["GetAgent"] == "unary"

        service.call("CreateAgent", {"agent_id": "reflected", "display_name": "Reflected"})
        [got] = service.call("GetAgent", {"agentId": "reflected"})
        assert got["agent"]["displayName"] == "Reflected"

        chunks = service.call(
            "GenerateSyntheticTrainingData",
            {"dataType": "SYNTHETIC_DATA_TYPE_CUSTOMER_QUERIES", "count": 30, "chunkSize": 10},
        )
        assert sum(len(chunk.get("examples", [])) for chunk in chunks) == 30
        assert chunks[-1]["summary"]["generatedCount"] == 30


def test_errors_carry_their_details_without_our_files(server: ServerThread) -> None:
    """The rich status's details are Any messages; reflection resolves our ErrorDetail too."""
    with grpc.insecure_channel(server.address) as channel:
        service = ReflectedService(channel, SERVICE)
        try:
            service.call("GetAgent", {"agent_id": "nobody"})
        except grpc.RpcError as error:
            status = dict(error.trailing_metadata())["grpc-status-details-bin"]
        else:
            raise AssertionError("GetAgent of a missing agent succeeded")
        detail_class = message_factory.GetMessageClass(
            service.descriptor.file.pool.FindMessageTypeByName("agent_training.v1.ErrorDetail")
        )
        details = status_pb2.Status.FromString(status).details
        packed = next(d for d in details if d.type_url.endswith("agent_training.v1.ErrorDetail"))
        detail = detail_class.FromString(packed.value)
        assert json.loads(json_format.MessageToJson(detail))["code"] == "AGENT_NOT_FOUND"


BUF = REPO_ROOT / ".tools/node_modules/.bin/buf"


@pytest.mark.skipif(not BUF.exists(), reason="buf is installed by `make tools` (make test does)")
def test_buf_curl_lists_and_calls_by_reflection(server: ServerThread) -> None:
    base = f"http://{server.address}"
    flags = ["curl", "--protocol", "grpc", "--http2-prior-knowledge"]
    listed = subprocess.run(
        [BUF, *flags, "--list-methods", base], capture_output=True, text=True, check=True
    )
    assert f"{SERVICE}/TrainAgent" in listed.stdout.split()
    created = subprocess.run(
        [BUF, *flags, "-d", '{"agent_id": "curled"}', f"{base}/{SERVICE}/CreateAgent"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(created.stdout)["agent"]["agentId"] == "curled"
