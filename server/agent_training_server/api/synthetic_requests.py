"""Generation and dataset requests: validation into a GenerationPlan, and message conversion."""

from __future__ import annotations

from agent_training.v1 import service_pb2, synthetic_pb2
from agent_training_server.api.convert import timestamp
from agent_training_server.api.field_limits import (
    DEFAULT_CHUNK_SIZE as DEFAULT_CHUNK_SIZE,  # the handlers' default chunk, named here too
)
from agent_training_server.api.field_limits import (
    MAX_DATASET_NAME,
    MAX_GRAMMAR,
    MAX_TOPICS,
)
from agent_training_server.api.validation import Checker
from agent_training_server.config import ServerConfig
from agent_training_server.domain import Dataset
from agent_training_server.example_checks import check_example_fields
from agent_training_server.services.synthetic import (
    ENCODER_SYNONYMS_LIMIT,
    MAX_ENCODER_SYNONYM_SOURCES,
)
from agent_training_server.synthetic import sources
from agent_training_server.synthetic.pipeline import Summary
from agent_training_server.synthetic.plan import (
    COMMON_PARAMETERS,
    DATA_TYPES,
    DEFAULT_CONTEXT_TURNS,
    DEFAULT_EXPLORATION_RATE,
    DEFAULT_FALLBACK,
    PARAMETERS_BY_TYPE,
    GenerationPlan,
)
from agent_training_server.synthetic.sources import SourceExample

_DIFFICULTY_NAMES = {
    synthetic_pb2.DIFFICULTY_UNSPECIFIED: sources.MEDIUM,
    synthetic_pb2.DIFFICULTY_EASY: sources.EASY,
    synthetic_pb2.DIFFICULTY_MEDIUM: sources.MEDIUM,
    synthetic_pb2.DIFFICULTY_HARD: sources.HARD,
}
_DIFFICULTY_VALUES = {
    sources.EASY: synthetic_pb2.DIFFICULTY_EASY,
    sources.MEDIUM: synthetic_pb2.DIFFICULTY_MEDIUM,
    sources.HARD: synthetic_pb2.DIFFICULTY_HARD,
}

GenerateRequest = (
    service_pb2.GenerateSyntheticTrainingDataRequest | service_pb2.GenerateSyntheticExamplesRequest
)


def data_type_name(value: synthetic_pb2.SyntheticDataType.ValueType) -> str:
    """The data type's short name ("customer_queries"); empty for unset or unknown values."""
    try:
        name = synthetic_pb2.SyntheticDataType.Name(value)
    except ValueError:
        return ""
    return name.removeprefix("SYNTHETIC_DATA_TYPE_").lower() if value else ""


def check_generate(request: GenerateRequest, server: ServerConfig, *, unary: bool) -> None:
    """Validate everything about a generation request that needs no store or agent.

    Sizes were checked before the handler ran; count, chunk_size and the parameters' numbers
    are checked against their ranges in field_limits.
    """
    checker = Checker()
    kind = data_type_name(request.data_type)
    if not kind:
        valid = ", ".join(f"SYNTHETIC_DATA_TYPE_{name.upper()}" for name in DATA_TYPES)
        checker.add("data_type", f"is required; one of {valid}")
    checker.ranges(request, server)
    checker.request_id(request.request_id)
    if request.save_as:
        checker.text("save_as", request.save_as, MAX_DATASET_NAME)
    if kind:
        _check_parameters(checker, kind, request.parameters, server)
    checker.raise_if_any()


def _check_parameters(
    checker: Checker,
    kind: str,
    parameters: synthetic_pb2.SyntheticDataParameters,
    server: ServerConfig,
) -> None:
    allowed = (*COMMON_PARAMETERS, *PARAMETERS_BY_TYPE[kind])
    for field, _value in parameters.ListFields():
        if field.name not in allowed:
            checker.add(
                f"parameters.{field.name}",
                f"does not apply to {kind}; its parameters are {', '.join(allowed)}",
            )
    checker.enum("parameters.difficulty", parameters.difficulty, synthetic_pb2.Difficulty)
    checker.enum("parameters.label", parameters.label, synthetic_pb2.SyntheticLabel)
    known_topics = sorted(sources.builtin_topics())
    for index, topic in enumerate(parameters.topics[:MAX_TOPICS]):
        if topic not in known_topics:
            checker.add(
                f"parameters.topics[{index}]",
                f"{topic[:40]!r} is not a topic; the topics are {', '.join(known_topics)}",
            )
    checker.text("parameters.fallback_output", parameters.fallback_output, server.max_text_length)
    if parameters.target_agent_id:
        checker.resource_id("parameters.target_agent_id", parameters.target_agent_id)
    _check_sources(checker, kind, parameters, server)


def _check_sources(
    checker: Checker,
    kind: str,
    parameters: synthetic_pb2.SyntheticDataParameters,
    server: ServerConfig,
) -> None:
    has_inline, has_dataset = bool(parameters.source_examples), bool(parameters.dataset_id)
    if kind == "paraphrases" and has_inline == has_dataset:
        checker.add(
            "parameters.source_examples",
            "paraphrases needs the examples to reword: set source_examples or dataset_id (one)",
        )
    if kind == "feedback_logs":
        if not parameters.agent_id:
            checker.add("parameters.agent_id", "is required: the agent whose answers are logged")
        else:
            checker.resource_id("parameters.agent_id", parameters.agent_id)
        if has_inline and has_dataset:
            checker.add("parameters.dataset_id", "set source_examples or dataset_id, not both")
    if kind == "templates" and not parameters.grammar.strip():
        checker.add("parameters.grammar", "is required for templates; see docs/synthetic.md")
    checker.text("parameters.grammar", parameters.grammar, MAX_GRAMMAR)
    if (
        parameters.encoder_synonyms
        and len(parameters.source_examples) > MAX_ENCODER_SYNONYM_SOURCES
    ):
        checker.add("parameters.encoder_synonyms", ENCODER_SYNONYMS_LIMIT)
    limit = server.max_examples_per_request
    if len(parameters.source_examples) > limit:
        checker.add("parameters.source_examples", f"at most {limit} examples")
    check_example_fields(
        checker, "parameters.source_examples", parameters.source_examples[:limit], server
    )


def plan_from_request(request: GenerateRequest) -> GenerationPlan:
    """The GenerationPlan of a request that passed check_generate.

    A dataset's examples are read into the plan by the synthetic service (`prepare`).
    """
    parameters = request.parameters
    kind = data_type_name(request.data_type)
    inline = [
        SourceExample(e.input, e.expected_output, tuple(e.context), e.feedback)
        for e in parameters.source_examples
    ]
    return GenerationPlan(
        data_type=kind,
        count=request.count,
        difficulty=_DIFFICULTY_NAMES[parameters.difficulty],
        topics=tuple(parameters.topics),
        seed=parameters.seed,
        label_by_response=parameters.label == synthetic_pb2.SYNTHETIC_LABEL_RESPONSE,
        grammar=parameters.grammar,
        source_examples=tuple(inline),
        fallback_output=parameters.fallback_output or DEFAULT_FALLBACK,
        context_turns=parameters.context_turns
        if parameters.HasField("context_turns")
        else DEFAULT_CONTEXT_TURNS,
        variants_per_example=parameters.variants_per_example,
        exploration_rate=parameters.exploration_rate
        if parameters.HasField("exploration_rate")
        else DEFAULT_EXPLORATION_RATE,
        min_confidence=parameters.min_confidence if parameters.HasField("min_confidence") else None,
        encoder_synonyms=parameters.encoder_synonyms,
    )


def difficulty_value(plan: GenerationPlan) -> int:
    """The Difficulty enum value of a plan."""
    return _DIFFICULTY_VALUES[plan.difficulty]


def summary_to_proto(
    summary: Summary, dataset: Dataset | None = None
) -> synthetic_pb2.GenerationSummary:
    """A generation's summary as the contract's message."""
    message = synthetic_pb2.GenerationSummary(
        generated_count=summary.generated,
        requested_count=summary.requested,
        shortfall_reason=summary.shortfall_reason,
        candidates_tried=summary.candidates_tried,
        exact_duplicates_removed=summary.duplicates.exact,
        normalized_duplicates_removed=summary.duplicates.normalized,
        near_duplicates_removed=summary.duplicates.near,
        target_tried_count=summary.target_tried,
        label_counts=dict(summary.label_counts),
    )
    if summary.target_pass_rate is not None:
        message.target_pass_rate = summary.target_pass_rate
    if dataset is not None:
        message.dataset.CopyFrom(dataset_to_proto(dataset))
    return message


def recipe_bytes(request: GenerateRequest) -> bytes:
    """The GenerationRecipe of a generation request, serialised for the store."""
    return synthetic_pb2.GenerationRecipe(
        data_type=request.data_type, count=request.count, parameters=request.parameters
    ).SerializeToString(deterministic=True)


def dataset_to_proto(dataset: Dataset) -> synthetic_pb2.Dataset:
    """A stored dataset as the contract's message."""
    message = synthetic_pb2.Dataset(
        dataset_id=dataset.dataset_id,
        name=dataset.name,
        description=dataset.description,
        example_count=dataset.example_count,
        source=synthetic_pb2.DATASET_SOURCE_GENERATED
        if dataset.source == "generated"
        else synthetic_pb2.DATASET_SOURCE_UPLOAD,
        content_sha256=dataset.content_sha256,
        create_time=timestamp(dataset.create_time),
        output_count=dataset.output_count,
    )
    if dataset.recipe:
        message.recipe.ParseFromString(dataset.recipe)
    return message
