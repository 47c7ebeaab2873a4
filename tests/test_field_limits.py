"""Every request field has a limit (read from the contract's descriptors), and the limits and
ranges hold over a real channel: sizes refused before the handler runs, numbers outside the
range where they work refused with a field violation, the edges of each range accepted."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from agent_training.v1 import agents_pb2, service_pb2, synthetic_pb2, training_pb2
from agent_training_client import AgentTrainingClient, AgentTrainingError
from agent_training_server.api import convert, field_limits
from agent_training_server.api.field_limits import (
    FIELD_LIMITS,
    INT64_MAX,
    INT64_MIN,
    CheckedBy,
    Range,
    Setting,
    Size,
    resolve,
)
from agent_training_server.api.handlers import datasets as synthetic_handlers
from agent_training_server.api.limit_checks import is_map, is_number
from agent_training_server.config import ServerConfig
from agent_training_server.domain import Agent, BehaviorSettings
from tests.conftest import ServerThread, assert_status, expect_error, make_config

SERVICE = service_pb2.DESCRIPTOR.services_by_name["AgentTrainingService"]


# The table covers the contract ----------------------------------------------------------------


def request_messages() -> list[Descriptor]:
    """Every message a request can carry: the methods' input types and the messages in them."""
    seen: dict[str, Descriptor] = {}
    pending = [method.input_type for method in SERVICE.methods]
    while pending:
        message = pending.pop()
        if message.full_name in seen:
            continue
        seen[message.full_name] = message
        pending += [f.message_type for f in message.fields if f.message_type is not None]
    return list(seen.values())


def missing_limit(field: FieldDescriptor) -> str:
    """What the table lacks for a field; empty when its limit is there."""
    limit = FIELD_LIMITS.get(field.full_name)
    if is_map(field) or (field.is_repeated and field.message_type is not None):
        return "" if isinstance(limit, Size) and limit.items is not None else "max items"
    if field.is_repeated and field.cpp_type == FieldDescriptor.CPPTYPE_STRING:
        complete = isinstance(limit, Size) and None not in (limit.items, limit.chars)
        return "" if complete else "max items and max characters"
    if field.is_repeated:
        return "" if isinstance(limit, Size) and limit.items is not None else "max items"
    if field.cpp_type == FieldDescriptor.CPPTYPE_STRING:
        return "" if isinstance(limit, Size) and limit.chars is not None else "max characters"
    if is_number(field):
        return "" if isinstance(limit, Range | CheckedBy) else "a range"
    return ""  # a single message (its fields are checked), an enum or a bool


def test_every_repeated_map_string_and_number_field_of_a_request_has_a_limit():
    messages = request_messages()
    assert len(messages) > 30  # the walk found the nested messages too
    missing = [
        f"{field.full_name}: {what}"
        for message in messages
        for field in message.fields
        if (what := missing_limit(field))
    ]
    assert not missing, "add these to field_limits and docs/limits.md:\n" + "\n".join(missing)


def test_the_table_names_only_request_fields_and_real_settings():
    fields = {field.full_name for message in request_messages() for field in message.fields}
    assert set(FIELD_LIMITS) <= fields, sorted(set(FIELD_LIMITS) - fields)
    settings = {field.name for field in dataclasses.fields(ServerConfig)}
    for name, limit in FIELD_LIMITS.items():
        bounds = vars(limit).values() if not isinstance(limit, CheckedBy) else ()
        for bound in bounds:
            if isinstance(bound, Setting):
                assert bound.name in settings, (name, bound)


def test_docs_list_every_limit():
    text = (Path(__file__).resolve().parents[1] / "docs" / "limits.md").read_text()
    missing = [
        name for name in FIELD_LIMITS if f"`{name.removeprefix('agent_training.v1.')}`" not in text
    ]
    assert not missing, missing


def test_limits_checked_in_other_handlers_agree_with_the_table():
    page = FIELD_LIMITS["agent_training.v1.ListDatasetExamplesRequest.page_size"]
    assert resolve(page.high, ServerConfig()) == synthetic_handlers.MAX_EXAMPLES_PAGE
    assert synthetic_handlers.DEFAULT_EXAMPLES_PAGE == 1_000  # "0 means 1000" in the table


# List responses fit the message limit ---------------------------------------------------------


def largest_agent(config: ServerConfig) -> agents_pb2.Agent:
    """The largest Agent message the limits allow, each character 4 bytes in UTF-8."""
    wide = "\U0001f642"

    def chars(name: str) -> int:
        return int(resolve(FIELD_LIMITS[f"agent_training.v1.{name}"].chars, config))

    labels = FIELD_LIMITS["agent_training.v1.CreateAgentRequest.labels"].items
    disabled = FIELD_LIMITS["agent_training.v1.BehaviorSettings.disabled_outputs"]
    items = int(resolve(disabled.items, config))
    total = int(resolve(disabled.total_chars, config))
    each = int(resolve(disabled.chars, config))
    long_ones = [wide * each] * (total // each) + [wide * (total % each)]
    outputs = (*long_ones, *[""] * (items - len(long_ones)))
    key_chars = chars("CreateAgentRequest.LabelsEntry.key")
    value = wide * chars("CreateAgentRequest.LabelsEntry.value")
    agent = Agent(
        agent_id="a" * chars("CreateAgentRequest.agent_id"),
        display_name=wide * chars("CreateAgentRequest.display_name"),
        description=wide * chars("CreateAgentRequest.description"),
        labels={f"{i:02d}" + wide * (key_chars - 2): value for i in range(int(labels))},
        default_behavior=BehaviorSettings(
            confidence_threshold=0.5,
            fallback_output=wide * chars("BehaviorSettings.fallback_output"),
            exploration_rate=0.5,
            temperature=0.5,
            num_alternatives=20,
            disabled_outputs=outputs,
        ),
        active_version_id="v" * field_limits.ID_CHARS,
        version_count=2**31 - 1,
        create_time=4e9,
        update_time=4e9,
    )
    return convert.agent_to_proto(agent)


def test_the_largest_list_agents_page_fits_the_message_limit():
    """docs/limits.md: with every field bounded, a full page of the largest agents fits."""
    config = ServerConfig()
    agent = largest_agent(config)
    page = service_pb2.ListAgentsResponse(
        agents=[agent] * config.max_page_size,
        next_page_token="t" * field_limits.MAX_PAGE_TOKEN,
    )
    assert agent.ByteSize() < 66_000
    assert page.ByteSize() <= config.max_message_bytes, (agent.ByteSize(), page.ByteSize())


# Sizes over a real channel -------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerThread]:
    running = ServerThread(make_config(tmp_path_factory.mktemp("field-limits")))
    with AgentTrainingClient(running.address, timeout=60) as client:
        client.create_agent(agent_id="kept")
    yield running
    running.stop()


@pytest.fixture
def client(server: ServerThread) -> Iterator[AgentTrainingClient]:
    with AgentTrainingClient(server.address, timeout=60, max_message_bytes=1 << 27) as made:
        yield made


def refused(error: AgentTrainingError, field: str) -> str:
    """Check a refusal with a field violation on `field`; return its description."""
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert not error.retryable
    fields = [v.field for v in error.field_violations]
    assert field in fields, error.field_violations
    return error.field_violations[fields.index(field)].description


def out_of_range(error: AgentTrainingError, field: str) -> str:
    """Check a refusal of a number outside its range; return the violation's description."""
    description = refused(error, field)
    assert description.startswith("must be"), description
    return description


def test_millions_of_disabled_outputs_are_refused_and_list_agents_keeps_answering(client):
    before = [agent.agent_id for agent in client.iter_agents()]
    huge = agents_pb2.BehaviorSettings(disabled_outputs=["x"] * 1_000_000)
    error = expect_error(client.create_agent, agent_id="bloated", default_behavior=huge)
    description = refused(error, "default_behavior.disabled_outputs")
    assert "1000000 items" in description and "at most 2000" in description
    assert "default_behavior.disabled_outputs takes at most 2000 items" in error.hint
    wordy = agents_pb2.BehaviorSettings(disabled_outputs=["w" * 3_000] * 3)
    error = expect_error(client.create_agent, agent_id="bloated", default_behavior=wordy)
    assert "9000 characters in all" in refused(error, "default_behavior.disabled_outputs")

    assert [agent.agent_id for agent in client.iter_agents()] == before
    most = agents_pb2.BehaviorSettings(disabled_outputs=["w" * 4_000] * 2)
    client.create_agent(agent_id="most-disabled", default_behavior=most)
    page = client.list_agents(page_size=1_000)
    assert "most-disabled" in [agent.agent_id for agent in page.agents]


def example(**fields) -> training_pb2.TrainingExample:
    return training_pb2.TrainingExample(**{"input": "hi", "expected_output": "a", **fields})


def upload(client: AgentTrainingClient, examples: list[training_pb2.TrainingExample]):
    return lambda: client.upload_dataset("limits-upload", examples)


OVERSIZED = {
    "labels": ("create_agent", {"labels": {f"k{i}": "v" for i in range(33)}}, "labels"),
    "label key": ("create_agent", {"labels": {"k" * 65: "v"}}, f"labels[{'k' * 40!r}]"),
    "display_name": ("create_agent", {"display_name": "d" * 201}, "display_name"),
    "request_id": ("create_agent", {"request_id": "r" * 129}, "request_id"),
    "context turns": (
        "train_agent",
        {"agent_id": "missing", "training_data": [example(context=["c"] * 21)]},
        "training_data[0].context",
    ),
    "feedback": (
        "train_agent",
        {"agent_id": "kept", "training_data": [example(feedback="1" * 65)]},
        "training_data[0].feedback",
    ),
    "topics": (
        "generate_synthetic_examples",
        {"data_type": 1, "count": 1, "parameters": {"topics": ["billing"] * 65}},
        "parameters.topics",
    ),
    "grammar": (
        "generate_synthetic_examples",
        {"data_type": 6, "count": 1, "parameters": {"grammar": "g" * 200_001}},
        "parameters.grammar",
    ),
    "inputs": ("invoke_agent", {"agent_id": "kept", "inputs": ["q"] * 4097}, "inputs"),
    "input": ("invoke_agent", {"agent_id": "kept", "input": "q" * 4001}, "input"),
    "goals": (
        "analyze_and_optimize_stream",
        {"agent_id": "kept", "optimization_goals": [1] * 17},
        "request.optimization_goals",
    ),
    "metric name": (
        "adapt_agent_behavior",
        {"agent_id": "kept", "adaptation_strategy": 2, "performance_metrics": {"m" * 65: 0.5}},
        f"performance_metrics[{'m' * 40!r}]",
    ),
    "comment": (
        "record_feedback",
        {"agent_id": "kept", "invocation_id": "inv", "feedback": "correct", "comment": "c" * 2001},
        "comment",
    ),
    "page_token": ("list_agents", {"page_token": "t" * 1025}, "page_token"),
}


@pytest.mark.parametrize("case", sorted(OVERSIZED))
def test_a_field_over_its_size_is_refused_on_its_path_before_the_handler(client, case):
    method, fields, path = OVERSIZED[case]
    error = expect_error(getattr(client, method), **fields)
    description = refused(error, path)
    assert "at most" in description
    assert path in error.hint and "docs/limits.md" in error.hint


def test_each_message_of_an_upload_is_checked(client):
    error = expect_error(upload(client, [example(feedback="1" * 65)]))
    refused(error, "examples[0].feedback")
    error = expect_error(upload(client, [example(propensity=2.0)]))
    refused(error, "examples[0].propensity")
    assert "limits-upload" not in [d.name for d in client.list_datasets().datasets]


# Ranges over a real channel ------------------------------------------------------------------


def train(client: AgentTrainingClient, agent_id: str = "kept", **config):
    return lambda: client.train_agent(
        agent_id=agent_id,
        training_data=[example(), example(expected_output="b")],
        config=training_pb2.TrainingConfig(**config),
    )


@pytest.mark.parametrize("seed", [-1, -(2**31), INT64_MIN])
def test_a_negative_seed_is_refused_on_config_seed(client, seed):
    description = out_of_range(expect_error(train(client, seed=seed)), "config.seed")
    assert f"got {seed}" in description and "[0, 9223372036854775807]" in description


@pytest.mark.parametrize("temperature", [1e-320, 0.0, -1.0, 0.04, 20.5, math.nan, math.inf])
def test_a_temperature_outside_where_it_works_is_refused(client, temperature):
    behavior = agents_pb2.BehaviorSettings(temperature=temperature)
    error = expect_error(client.create_agent, agent_id="hot", default_behavior=behavior)
    assert "[0.05, 20]" in out_of_range(error, "default_behavior.temperature")


OUT_OF_RANGE = [
    ("epochs", {"epochs": 0}, "config.epochs"),
    ("epochs", {"epochs": 1001}, "config.epochs"),
    ("learning_rate", {"learning_rate": 0.0}, "config.learning_rate"),
    ("learning_rate", {"learning_rate": 1e-8}, "config.learning_rate"),
    ("learning_rate", {"learning_rate": 10.5}, "config.learning_rate"),
    ("learning_rate", {"learning_rate": -math.inf}, "config.learning_rate"),
    ("batch_size", {"batch_size": 0}, "config.batch_size"),
    ("batch_size", {"batch_size": 4097}, "config.batch_size"),
    ("validation_split", {"validation_split": 0.51}, "config.validation_split"),
    ("patience", {"early_stopping": {"patience": -1}}, "config.early_stopping.patience"),
    ("min_delta", {"early_stopping": {"min_delta": 10.5}}, "config.early_stopping.min_delta"),
    ("min_delta", {"early_stopping": {"min_delta": math.nan}}, "config.early_stopping.min_delta"),
    ("max_duration", {"max_duration_seconds": 0}, "config.max_duration_seconds"),
    ("max_duration", {"max_duration_seconds": 3601}, "config.max_duration_seconds"),
    ("freeze", {"freeze_encoder_epochs": -1}, "config.freeze_encoder_epochs"),
    ("freeze", {"epochs": 2, "freeze_encoder_epochs": 3}, "config.freeze_encoder_epochs"),
    ("num_workers", {"num_workers": 0}, "config.num_workers"),
    ("num_workers", {"num_workers": 65}, "config.num_workers"),
]


@pytest.mark.parametrize(("name", "config", "path"), OUT_OF_RANGE, ids=lambda v: str(v))
def test_training_config_out_of_range_is_refused_on_its_field(client, name, config, path):
    description = refused(expect_error(train(client, **config)), path)
    assert "must be" in description, description


def generate(client, data_type=1, count=1, **parameters):
    return lambda: client.generate_synthetic_examples(
        data_type=data_type, count=count, parameters=parameters
    )


def test_other_numbers_out_of_range_are_refused_on_their_fields(client):
    refused = out_of_range
    examples = [example(propensity=0.0)]
    error = expect_error(client.train_agent, agent_id="kept", training_data=examples)
    refused(error, "training_data[0].propensity")
    error = expect_error(
        client.analyze_and_optimize, agent_id="kept", evaluation_data=[example(propensity=1.5)]
    )
    refused(error, "evaluation_data[0].propensity")
    for behavior, path in [
        ({"confidence_threshold": 1.01}, "default_behavior.confidence_threshold"),
        ({"exploration_rate": -0.1}, "default_behavior.exploration_rate"),
        ({"num_alternatives": 21}, "default_behavior.num_alternatives"),
    ]:
        refused(expect_error(client.create_agent, default_behavior=behavior), path)
    refused(expect_error(generate(client, count=0)), "count")
    refused(expect_error(generate(client, count=10_001)), "count")
    error = expect_error(generate(client, min_confidence=0.0, target_agent_id="kept"))
    refused(error, "parameters.min_confidence")
    refused(expect_error(generate(client, 5, exploration_rate=1.5)), "parameters.exploration_rate")
    refused(expect_error(generate(client, 2, context_turns=7)), "parameters.context_turns")
    error = expect_error(generate(client, 3, variants_per_example=1001))
    refused(error, "parameters.variants_per_example")
    error = expect_error(
        client.generate_synthetic_training_data, data_type=1, count=10, chunk_size=10_001
    )
    refused(error, "chunk_size")
    refused(expect_error(client.list_agents, page_size=1001), "page_size")
    refused(expect_error(client.list_dataset_examples, "ds_x", page_size=10_001), "page_size")
    error = expect_error(client.watch_training_job, "train_x", -1)
    refused(error, "from_sequence")
    error = expect_error(
        client.adapt_agent_behavior,
        agent_id="kept",
        adaptation_strategy=2,
        performance_metrics={"success_rate": 0.5},
        targets={"success_rate": 1.5},
    )
    refused(error, "targets['success_rate']")


# The edges of the ranges work ------------------------------------------------------------------


def small_examples() -> list[training_pb2.TrainingExample]:
    words = {"refund": "money back please", "track": "where is my parcel", "cancel": "stop it"}
    return [
        example(input=f"{text} {i}", expected_output=output)
        for output, text in words.items()
        for i in range(6)
    ]


def test_the_edges_of_the_training_ranges_train_and_answer(client):
    behavior = agents_pb2.BehaviorSettings(temperature=0.05, num_alternatives=20)
    client.create_agent(agent_id="edges", default_behavior=behavior)
    high = training_pb2.TrainingConfig(
        seed=INT64_MAX,
        learning_rate=10.0,
        epochs=2,
        batch_size=4096,
        validation_split=0.5,
        early_stopping=training_pb2.EarlyStopping(patience=1000, min_delta=10.0),
        max_duration_seconds=3600,
        freeze_encoder_epochs=2,
        num_workers=1,
    )
    low = training_pb2.TrainingConfig(
        seed=0,
        learning_rate=1e-7,
        epochs=1,
        batch_size=1,
        validation_split=0.0,
        early_stopping=training_pb2.EarlyStopping(patience=0, min_delta=0.0),
        max_duration_seconds=600,
        freeze_encoder_epochs=0,
    )
    for config in (high, low):
        events = list(
            client.train_agent(agent_id="edges", training_data=small_examples(), config=config)
        )
        finished = events[-1].finished
        assert finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED, finished.error
        assert math.isfinite(finished.metrics.loss)
    answer = client.invoke_agent(agent_id="edges", input="money back please").predictions[0]
    assert 0.0 <= answer.confidence <= 1.0 and math.isfinite(answer.confidence)
    assert all(math.isfinite(a.confidence) for a in answer.alternatives)


def test_the_edges_of_other_ranges_are_accepted(client):
    for behavior in (
        {"temperature": 20.0, "confidence_threshold": 1.0, "exploration_rate": 1.0},
        {"temperature": 0.05, "confidence_threshold": 0.0, "exploration_rate": 0.0},
        {"num_alternatives": 0},
    ):
        client.create_agent(default_behavior=behavior)
    for seed in (INT64_MIN, INT64_MAX):
        assert len(generate(client, seed=seed)().examples) == 1
    assert generate(client, 2, context_turns=6)().examples[0].example.context
    assert generate(client, 2, context_turns=1)().examples
    chunks = list(client.generate_synthetic_training_data(data_type=1, count=3, chunk_size=10_000))
    assert sum(len(chunk.examples) for chunk in chunks) == 3
    assert client.list_agents(page_size=1000).agents
    dataset = client.upload_dataset(
        "edges", [example(propensity=1.0), example(expected_output="b", propensity=1e-9)]
    )
    assert len(client.list_dataset_examples(dataset.dataset_id, page_size=10_000).examples) == 2
    error = expect_error(client.watch_training_job, "train_missing", INT64_MAX)
    assert error.status_code == grpc.StatusCode.NOT_FOUND


def test_the_synthetic_enums_and_sizes_keep_working(client):
    """A request at its sizes' limits is answered: the limits are not off by one."""
    response = client.generate_synthetic_examples(
        data_type=synthetic_pb2.SYNTHETIC_DATA_TYPE_CUSTOMER_QUERIES,
        count=2,
        parameters={"topics": ["billing"] * 64},
        save_as="n" * 128,
        request_id="r" * 128,
    )
    assert len(response.examples) == 2
    agent = client.create_agent(
        display_name="d" * 200,
        description="e" * 2000,
        labels={f"{i:02d}" + "k" * 62: "v" * 64 for i in range(32)},
    )
    assert len(agent.labels) == 32


def test_a_raised_setting_raises_the_limit_the_guard_checks(tmp_path: Path):
    """The size checks follow the server's settings, not their defaults."""
    text = "x" * 6_000  # over the default max_text_length (4,000), under this server's
    server = ServerThread(make_config(tmp_path, max_text_length=10_000))
    try:
        with AgentTrainingClient(server.address) as raised:
            agent = raised.create_agent(agent_id="long-texts", description="")
            try:
                raised.invoke_agent(agent_id=agent.agent_id, input=text)
            except AgentTrainingError as error:  # no version yet: refused, but not for size
                assert error.status_code != grpc.StatusCode.INVALID_ARGUMENT, error
    finally:
        server.stop()
