"""GenerateSyntheticTrainingData and datasets over a real channel: every data type, determinism,
balance, duplicates, limits, datasets, and training on generated data."""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Iterator

import grpc
import pytest

from agent_training.v1 import synthetic_pb2, training_pb2
from agent_training_client import AgentTrainingClient
from agent_training_server.synthetic.dedup import normalize
from tests.conftest import ServerThread, assert_status, expect_error, make_config
from tests.test_training import banking_examples

CUSTOMER_QUERIES = synthetic_pb2.SYNTHETIC_DATA_TYPE_CUSTOMER_QUERIES
CONVERSATIONS = synthetic_pb2.SYNTHETIC_DATA_TYPE_CONVERSATIONS
PARAPHRASES = synthetic_pb2.SYNTHETIC_DATA_TYPE_PARAPHRASES
OUT_OF_SCOPE = synthetic_pb2.SYNTHETIC_DATA_TYPE_OUT_OF_SCOPE
FEEDBACK_LOGS = synthetic_pb2.SYNTHETIC_DATA_TYPE_FEEDBACK_LOGS
TEMPLATES = synthetic_pb2.SYNTHETIC_DATA_TYPE_TEMPLATES
DIFFICULTIES = (
    synthetic_pb2.DIFFICULTY_EASY,
    synthetic_pb2.DIFFICULTY_MEDIUM,
    synthetic_pb2.DIFFICULTY_HARD,
)
SUCCEEDED = training_pb2.TRAINING_STATUS_SUCCEEDED

GRAMMAR = """
# A small user-defined domain.
%[book_table] -> Your table is booked.
    (book|reserve) a table for @[people] [people] ~[when?]
    i'd like a table for @[people] ~[when]
    can we (get|have) a table ~[when?] for @[people]
%[cancel_booking] -> Your booking is cancelled.
    cancel my (booking|reservation) ~[when?]
    i (can't|cannot) make it ~[when], please cancel
    please drop the table for @[people] ~[when?]
~[when]
    tonight
    tomorrow
    on friday
    at eight
@[people]
    two
    four
    six
"""


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory) -> Iterator[ServerThread]:
    running = ServerThread(make_config(tmp_path_factory.mktemp("synthetic"), workers=1))
    yield running
    running.stop()


@pytest.fixture
def client(shared_server: ServerThread) -> Iterator[AgentTrainingClient]:
    with AgentTrainingClient(shared_server.address, timeout=120) as made:
        yield made


def generate(client: AgentTrainingClient, data_type: int, count: int, **parameters):
    """All examples and the summary of one streamed generation."""
    chunk_size = parameters.pop("chunk_size", 0)
    save_as = parameters.pop("save_as", "")
    examples, summary = [], None
    for message in client.generate_synthetic_training_data(
        data_type=data_type,
        count=count,
        parameters=synthetic_pb2.SyntheticDataParameters(**parameters),
        chunk_size=chunk_size,
        save_as=save_as,
    ):
        examples.extend(message.examples)
        if message.HasField("summary"):
            summary = message.summary
    assert summary is not None, "the last chunk carries the summary"
    return examples, summary


def train_short(client: AgentTrainingClient, agent_id: str, **request) -> training_pb2.TrainingJob:
    """Create `agent_id`, train it briefly on `request`'s data and return the finished job."""
    client.create_agent(agent_id=agent_id)
    events = list(
        client.train_agent(
            agent_id=agent_id, config=training_pb2.TrainingConfig(epochs=2), **request
        )
    )
    finished = events[-1].finished
    assert finished.status == SUCCEEDED, finished.error
    return client.get_training_job(events[-1].training_id)


# Properties ---------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_output(client):
    first, _ = generate(client, CUSTOMER_QUERIES, 300, seed=7, difficulty=DIFFICULTIES[2])
    second, _ = generate(client, CUSTOMER_QUERIES, 300, seed=7, difficulty=DIFFICULTIES[2])
    other, _ = generate(client, CUSTOMER_QUERIES, 300, seed=8, difficulty=DIFFICULTIES[2])
    as_bytes = [e.SerializeToString(deterministic=True) for e in first]
    assert as_bytes == [e.SerializeToString(deterministic=True) for e in second]
    assert as_bytes != [e.SerializeToString(deterministic=True) for e in other]


def test_count_is_exact_and_intents_are_balanced_within_one(client):
    examples, summary = generate(client, CUSTOMER_QUERIES, 1003, topics=["billing", "orders"])
    assert len(examples) == summary.generated_count == 1003
    assert not summary.shortfall_reason
    per_intent = collections.Counter(e.intent for e in examples)
    assert max(per_intent.values()) - min(per_intent.values()) <= 1
    assert {e.topic for e in examples} == {"billing", "orders"}
    assert dict(summary.label_counts) == dict(
        collections.Counter(e.example.expected_output for e in examples)
    )


def test_output_has_no_exact_or_normalised_duplicates(client):
    examples, summary = generate(client, CUSTOMER_QUERIES, 3000, difficulty=DIFFICULTIES[0])
    texts = [e.example.input for e in examples]
    assert len(set(texts)) == len(texts)
    assert len({normalize(text) for text in texts}) == len(texts)
    removed = (
        summary.exact_duplicates_removed
        + summary.normalized_duplicates_removed
        + summary.near_duplicates_removed
    )
    # Candidates are made in batches: some made ahead are not needed once the count is met.
    assert summary.candidates_tried >= len(examples) + removed


def test_small_grammar_reports_its_shortfall(client):
    examples, summary = generate(
        client, TEMPLATES, 100_000, grammar=GRAMMAR, difficulty=DIFFICULTIES[0]
    )
    assert 0 < len(examples) < 100_000
    assert summary.generated_count == len(examples)
    assert "ran out of distinct examples" in summary.shortfall_reason
    per_intent = collections.Counter(e.intent for e in examples)
    assert max(per_intent.values()) - min(per_intent.values()) <= 1


def test_difficulty_changes_the_language(client):
    lengths = {}
    for difficulty in DIFFICULTIES:
        examples, _ = generate(client, CUSTOMER_QUERIES, 400, difficulty=difficulty, seed=3)
        lengths[difficulty] = sum(len(e.example.input.split()) for e in examples) / len(examples)
        assert all(e.difficulty == difficulty for e in examples)
    easy, medium, hard = (lengths[d] for d in DIFFICULTIES)
    assert easy < medium < hard


# Every data type feeds straight into training -------------------------------------------------


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
@pytest.mark.parametrize(
    "data_type", [CUSTOMER_QUERIES, CONVERSATIONS, TEMPLATES], ids=["queries", "chats", "grammar"]
)
def test_generated_examples_train_an_agent(client, data_type, difficulty):
    extra = {"grammar": GRAMMAR} if data_type == TEMPLATES else {"topics": ["shipping", "cards"]}
    examples, _ = generate(client, data_type, 120, difficulty=difficulty, **extra)
    assert all(e.example.input and e.example.expected_output for e in examples)
    assert all(e.generator and e.intent and e.topic for e in examples)
    if data_type == CONVERSATIONS:
        assert all(len(e.example.context) == 2 for e in examples)
    name = f"gen-{data_type}-{difficulty}"
    train_short(client, name, training_data=[e.example for e in examples])


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_paraphrases_and_out_of_scope_train_an_agent(client, difficulty):
    sources = banking_examples(per_intent=10)
    paraphrases, _ = generate(
        client, PARAPHRASES, 100, source_examples=sources, difficulty=difficulty
    )
    off_topic, _ = generate(client, OUT_OF_SCOPE, 30, difficulty=difficulty)
    assert all(e.difficulty == difficulty for e in paraphrases + off_topic)
    data = [*sources, *(e.example for e in paraphrases + off_topic)]
    job = train_short(client, f"para-oos-{difficulty}", training_data=data)
    assert job.output_count == len({e.expected_output for e in sources}) + 1


def test_response_labels_use_the_canonical_response(client):
    examples, _ = generate(
        client,
        CUSTOMER_QUERIES,
        50,
        topics=["refunds"],
        label=synthetic_pb2.SYNTHETIC_LABEL_RESPONSE,
    )
    by_intent = {e.intent: e.example.expected_output for e in examples}
    assert len(set(by_intent.values())) == len(by_intent)
    assert all(len(response.split()) > 3 for response in by_intent.values())


def test_paraphrases_keep_labels_and_differ_from_sources(client):
    sources = banking_examples(per_intent=10)
    examples, summary = generate(
        client, PARAPHRASES, 200, source_examples=sources, difficulty=DIFFICULTIES[1]
    )
    assert len(examples) == 200 and not summary.shortfall_reason
    source_texts = {normalize(e.input) for e in sources}
    labels = {e.expected_output for e in sources}
    assert all(e.example.expected_output in labels for e in examples)
    assert not any(normalize(e.example.input) in source_texts for e in examples)
    train_short(client, "paraphrased", training_data=[*sources, *(e.example for e in examples)])


def test_out_of_scope_is_labelled_with_the_fallback(client):
    examples, _ = generate(client, OUT_OF_SCOPE, 60, fallback_output="escalate")
    assert {e.example.expected_output for e in examples} == {"escalate"}
    assert {e.topic for e in examples} == {"out_of_scope"}
    assert len({e.intent for e in examples}) >= 10


def test_feedback_logs_come_from_the_agents_answers_and_train_reinforcement(client):
    sources = banking_examples(per_intent=20)
    train_short(client, "logger", training_data=sources)
    examples, _ = generate(
        client, FEEDBACK_LOGS, 150, agent_id="logger", source_examples=sources, seed=1
    )
    assert {e.example.feedback for e in examples} == {"correct", "incorrect"}
    assert all(0 < e.example.propensity <= 1 for e in examples)
    for e in examples:
        right = e.example.expected_output == e.intent
        assert e.example.feedback == ("correct" if right else "incorrect")
    train_short(
        client,
        "reinforced",
        training_data=[e.example for e in examples],
        training_type=training_pb2.TRAINING_TYPE_REINFORCEMENT,
    )


def test_hard_example_mining_keeps_what_the_agent_gets_wrong(client):
    easy, _ = generate(client, CUSTOMER_QUERIES, 300, topics=["cards", "payments"], seed=5)
    train_short(client, "to-mine", training_data=[e.example for e in easy])
    mined, summary = generate(
        client,
        CUSTOMER_QUERIES,
        40,
        topics=["cards", "payments"],
        difficulty=DIFFICULTIES[2],
        target_agent_id="to-mine",
        min_confidence=0.9,
    )
    assert mined and summary.target_tried_count >= len(mined)
    assert 0 <= summary.target_pass_rate < 1
    answers = client.invoke_agent(
        agent_id="to-mine", inputs=[e.example.input for e in mined]
    ).predictions
    for example, answer in zip(mined, answers, strict=True):
        assert answer.output != example.example.expected_output or answer.confidence < 0.9


# Errors ---------------------------------------------------------------------------------------


def test_encoder_synonyms_add_words_beyond_the_lexicon_and_repeat_by_seed(client):
    sources = banking_examples(per_intent=5)[:40]
    with_encoder, summary = generate(
        client, PARAPHRASES, 400, source_examples=sources, seed=3, encoder_synonyms=True
    )
    again, _ = generate(
        client, PARAPHRASES, 400, source_examples=sources, seed=3, encoder_synonyms=True
    )
    lexicon_only, _ = generate(client, PARAPHRASES, 400, source_examples=sources, seed=3)
    assert len(with_encoder) == 400 and not summary.shortfall_reason
    as_bytes = [e.SerializeToString(deterministic=True) for e in with_encoder]
    assert as_bytes == [e.SerializeToString(deterministic=True) for e in again]

    def words(examples) -> set[str]:
        return {word for e in examples for word in normalize(e.example.input).split()}

    source_words = {word for e in sources for word in normalize(e.input).split()}
    new_words = words(with_encoder) - words(lexicon_only) - source_words
    assert len(new_words) >= 5, new_words
    labels = {e.input: e.expected_output for e in sources}
    assert {e.example.expected_output for e in with_encoder} <= set(labels.values())


def test_encoder_synonyms_have_a_documented_limit_of_sources(client):
    sources = [
        training_pb2.TrainingExample(input=f"query number {n}", expected_output=f"l{n % 3}")
        for n in range(5_001)
    ]
    error = expect_error(
        lambda: generate(client, PARAPHRASES, 10, source_examples=sources, encoder_synonyms=True)
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert "parameters.encoder_synonyms" in error.message and "5000" in error.message
    dataset = client.upload_dataset("too-many-for-the-encoder", sources)
    error = expect_error(
        lambda: generate(
            client, PARAPHRASES, 10, dataset_id=dataset.dataset_id, encoder_synonyms=True
        )
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert "5001 examples" in error.message and error.hint
    error = expect_error(lambda: generate(client, CUSTOMER_QUERIES, 10, encoder_synonyms=True))
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert "encoder_synonyms" in error.message and "topics" in error.message


def test_encoder_synonyms_are_found_for_one_request_at_a_time(client):
    from agent_training_server.synthetic import encoder_synonyms

    sources = banking_examples(per_intent=2)[:10]
    with encoder_synonyms._LOCK:  # as while another request's lookup runs
        error = expect_error(
            lambda: generate(
                client, PARAPHRASES, 10, source_examples=sources, encoder_synonyms=True
            )
        )
    assert_status(error, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert error.code == "ENCODER_BUSY" and error.retryable and error.hint
    examples, _summary = generate(
        client, PARAPHRASES, 10, source_examples=sources, encoder_synonyms=True
    )
    assert len(examples) == 10


def test_unknown_data_type_lists_the_valid_ones(client):
    error = expect_error(lambda: generate(client, 0, 10))
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert "SYNTHETIC_DATA_TYPE_CUSTOMER_QUERIES" in error.message


def test_parameter_of_another_type_lists_the_valid_ones(client):
    error = expect_error(lambda: generate(client, OUT_OF_SCOPE, 10, grammar=GRAMMAR))
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert "parameters.grammar" in error.message and "fallback_output" in error.message


def test_unknown_topic_lists_the_topics(client):
    error = expect_error(lambda: generate(client, CUSTOMER_QUERIES, 10, topics=["weather"]))
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert "billing" in error.message and "weather" in error.message


def test_bad_grammar_names_the_line_and_gives_a_hint(client):
    grammar = "%[greet]\n    hello ~[nme]\n~[name]\n    bob\n"
    error = expect_error(lambda: generate(client, TEMPLATES, 10, grammar=grammar))
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert "line 2" in error.message and "~[nme]" in error.message
    assert "name" in error.hint
    assert error.trace_id


def test_unary_call_has_a_documented_limit(client, shared_server):
    response = client.generate_synthetic_examples(data_type=CUSTOMER_QUERIES, count=25)
    assert len(response.examples) == 25 and response.summary.generated_count == 25
    error = expect_error(
        client.generate_synthetic_examples, data_type=CUSTOMER_QUERIES, count=10_001
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert "GenerateSyntheticTrainingData streams larger counts" in error.message


def test_chunks_respect_chunk_size(client):
    sizes = [
        len(message.examples)
        for message in client.generate_synthetic_training_data(
            data_type=CUSTOMER_QUERIES, count=250, chunk_size=100
        )
    ]
    assert sizes == [100, 100, 50, 0]


# Datasets -------------------------------------------------------------------------------------


def test_generated_dataset_is_saved_read_back_and_trained_on(client):
    examples, summary = generate(
        client,
        CUSTOMER_QUERIES,
        500,
        topics=["security", "returns"],
        save_as="sec-returns",
        chunk_size=128,
    )
    dataset = summary.dataset
    assert dataset.dataset_id and dataset.example_count == 500
    assert dataset.source == synthetic_pb2.DATASET_SOURCE_GENERATED
    assert dataset.recipe.count == 500 and list(dataset.recipe.parameters.topics) == [
        "security",
        "returns",
    ]
    read_back = list(client.iter_dataset_examples(dataset.dataset_id, page_size=120))
    assert [e.SerializeToString() for e in read_back] == [e.SerializeToString() for e in examples]
    assert client.get_dataset(dataset.dataset_id) == dataset
    job = train_short(client, "from-dataset", dataset_id=dataset.dataset_id)
    assert job.example_count == 500


def test_upload_larger_than_the_message_limit(tmp_path):
    small = ServerThread(make_config(tmp_path, workers=1, max_message_bytes=256 * 1024))
    try:
        with AgentTrainingClient(small.address, timeout=60) as client:
            examples = [
                training_pb2.TrainingExample(
                    input=f"example number {i} " + "padding " * 20, expected_output=f"out{i % 7}"
                )
                for i in range(10_000)
            ]
            total = sum(e.ByteSize() for e in examples)
            assert total > 4 * 256 * 1024
            dataset = client.upload_dataset("big", examples, chunk_size=1_000)
            assert dataset.example_count == 10_000 and dataset.output_count == 7
            assert dataset.source == synthetic_pb2.DATASET_SOURCE_UPLOAD
            again = list(client.iter_dataset_examples(dataset.dataset_id, page_size=1_000))
            assert [e.example for e in again] == examples
            listed = client.list_datasets().datasets
            assert [d.name for d in listed] == ["big"]
            client.delete_dataset(dataset.dataset_id)
            assert_status(
                expect_error(client.get_dataset, dataset.dataset_id), grpc.StatusCode.NOT_FOUND
            )
    finally:
        small.stop()


def test_dataset_names_are_unique_and_bad_uploads_store_nothing(client):
    example = training_pb2.TrainingExample(input="hi", expected_output="greet")
    client.upload_dataset("unique-name", [example])
    error = expect_error(client.upload_dataset, "unique-name", [example])
    assert_status(error, grpc.StatusCode.ALREADY_EXISTS)
    bad = [example, training_pb2.TrainingExample(input="", expected_output="x")]
    error = expect_error(client.upload_dataset, "half-bad", bad)
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert "examples[1].input" in error.message
    names = [d.name for d in client.list_datasets(page_size=1000).datasets]
    assert "half-bad" not in names and "unique-name" in names


def test_upload_retry_with_the_same_request_id_returns_the_first_dataset(client):
    example = training_pb2.TrainingExample(input="bye", expected_output="farewell")
    first = client.upload_dataset("retried", [example], request_id="upload-1")
    second = client.upload_dataset("retried", [example], request_id="upload-1")
    assert first.dataset_id == second.dataset_id


def test_a_dataset_half_written_when_the_server_stopped_is_dropped(tmp_path):
    from agent_training_server.domain import Dataset
    from agent_training_server.store.sqlite import SqliteStore

    config = make_config(tmp_path, workers=1)
    store = SqliteStore(config.database_path)
    store.begin_dataset(Dataset(dataset_id="ds_00000000000000aa", name="interrupted"))
    store.append_dataset_examples("ds_00000000000000aa", 0, [b"\n\x04\n\x02hi"])
    store.close()
    running = ServerThread(config)
    try:
        with AgentTrainingClient(running.address, timeout=30) as client:
            assert list(client.list_datasets().datasets) == []
            example = training_pb2.TrainingExample(input="hi", expected_output="greet")
            assert client.upload_dataset("interrupted", [example]).example_count == 1
    finally:
        running.stop()


def test_train_with_both_inline_data_and_dataset_is_refused(client):
    error = expect_error(
        lambda: list(
            client.train_agent(
                agent_id="nobody",
                dataset_id="ds_0123456789abcdef",
                training_data=banking_examples(per_intent=2),
            )
        )
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert "dataset_id" in error.message


def test_training_on_a_missing_dataset_is_not_found(client):
    client.create_agent(agent_id="no-data")
    error = expect_error(
        lambda: list(client.train_agent(agent_id="no-data", dataset_id="ds_0000000000000000"))
    )
    assert_status(error, grpc.StatusCode.NOT_FOUND)
    assert error.code == "DATASET_NOT_FOUND"


# Command line ---------------------------------------------------------------------------------


def test_cli_generates_jsonl_saves_a_dataset_and_trains_from_both(shared_server, tmp_path):
    from tests.test_service import _cli

    address = shared_server.address
    out = tmp_path / "data.jsonl"
    made = _cli(
        address, "generate", "customer_queries", "--count", "200", "--topics",
        "billing,support", "--difficulty", "hard", "--out", str(out), "--save-as", "cli-set",
        "--quiet",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 200
    assert {"input", "expected_output", "topic", "intent", "difficulty", "generator"} <= set(
        lines[0]
    )
    assert {line["topic"] for line in lines} == {"billing", "support"}
    summary = json.loads(made.stderr)
    dataset_id = summary["dataset"]["dataset_id"]
    listed = _cli(address, "datasets", "list")
    assert dataset_id in listed.stdout and "cli-set" in listed.stdout
    assert _cli(address, "agents", "create", "cli-synth").returncode == 0
    from_file = _cli(address, "train", str(out), "--agent", "cli-synth", "--follow", "--quiet")
    assert from_file.returncode == 0, from_file.stderr
    from_set = _cli(address, "train", "--dataset", dataset_id, "--agent", "cli-synth", "--quiet",
                    "--follow")  # fmt: skip
    assert from_set.returncode == 0, from_set.stderr
    exported = tmp_path / "copy.jsonl"
    assert _cli(address, "datasets", "export", dataset_id, "--out", str(exported)).returncode == 0
    assert exported.read_text() == out.read_text()


def test_cli_paraphrases_with_encoder_synonyms(shared_server, tmp_path):
    from tests.test_service import _cli

    source = tmp_path / "sample.jsonl"
    source.write_text(
        "\n".join(
            json.dumps({"input": e.input, "expected_output": e.expected_output})
            for e in banking_examples(per_intent=3)
        )
    )
    runs = []
    for flags in ((), ("--encoder-synonyms",)):
        out = tmp_path / f"paraphrases{len(flags)}.jsonl"
        made = _cli(
            shared_server.address, "generate", "paraphrases", "--count", "60", "--source",
            str(source), "--seed", "4", "--out", str(out), "--quiet", *flags,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        runs.append(out.read_text().splitlines())
    assert len(runs[1]) == 60 and runs[1] != runs[0]


def test_save_as_retried_with_the_same_request_id_returns_the_first_dataset(client):
    request = dict(
        data_type=CUSTOMER_QUERIES, count=30, save_as="retry-set", request_id="generate-1"
    )
    first = client.generate_synthetic_examples(**request)
    second = client.generate_synthetic_examples(**request)
    assert first.summary.dataset.dataset_id == second.summary.dataset.dataset_id
    assert list(first.examples) == list(second.examples)
    error = expect_error(
        client.generate_synthetic_examples, data_type=CUSTOMER_QUERIES, count=30,
        save_as="retry-set",
    )  # fmt: skip
    assert_status(error, grpc.StatusCode.ALREADY_EXISTS)
    assert error.code == "DATASET_ALREADY_EXISTS"


def _generation_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name == "synthetic-generation"]


def test_closing_a_stream_stops_its_generation_and_frees_its_slot(tmp_path):
    running = ServerThread(make_config(tmp_path, workers=1, max_concurrent_generations=1))
    try:
        with AgentTrainingClient(running.address, timeout=30) as client:
            stream = client.generate_synthetic_training_data(
                data_type=CUSTOMER_QUERIES, count=1_000_000, chunk_size=100
            )
            first = next(stream)
            assert len(first.examples) == 100 and first.total_count == 1_000_000
            busy = expect_error(
                client.generate_synthetic_examples, data_type=CUSTOMER_QUERIES, count=5
            )
            assert_status(busy, grpc.StatusCode.RESOURCE_EXHAUSTED)
            assert busy.code == "TOO_MANY_GENERATIONS" and busy.retryable
            stream.close()  # the client goes away mid-stream
            deadline = time.monotonic() + 10
            while _generation_threads() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not _generation_threads()
            answer = client.generate_synthetic_examples(data_type=CUSTOMER_QUERIES, count=5)
            assert len(answer.examples) == 5
    finally:
        running.stop()
