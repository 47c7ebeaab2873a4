"""The seed API reference's four examples through the Python client's ``client.functions``.

Each call is the seed's JavaScript example with its fields as keyword arguments; the results
have the seed's success shape and the failures its error object.
"""

from __future__ import annotations

import grpc
import pytest

from agent_training_client import AgentTrainingClient, AgentTrainingError
from tests.conftest import TRACE_ID


@pytest.fixture
def base44(client: AgentTrainingClient) -> AgentTrainingClient:
    client.create_agent(agent_id="agent_abc123")
    return client


def test_train_agent_verbatim_trains_an_agent_that_gives_its_one_answer(
    base44: AgentTrainingClient,
) -> None:
    result = base44.functions.train_agent(
        agent_id="agent_abc123",
        training_data=[{"input": "Question?", "expected_output": "Answer", "feedback": "correct"}],
        training_type="supervised",
        config={"epochs": 10, "learning_rate": 0.001},
    )
    assert result["success"] is True
    assert result["data"]["training_id"].startswith("train_")
    assert result["data"]["status"] == "completed"
    assert set(result["data"]["metrics"]) >= {"accuracy", "loss"}
    assert result["data"]["metrics"]["accuracy"] == 1.0
    # One output learned: the agent answers it, whatever it is asked.
    answer = base44.invoke_agent(agent_id="agent_abc123", input="Something else entirely?")
    assert answer.predictions[0].output == "Answer"
    with pytest.raises(AgentTrainingError) as caught:
        base44.functions.train_agent(
            agent_id="agent_abc123",
            training_data=[{"input": "Question?", "expected_output": "x", "feedback": "incorrect"}],
        )
    error = caught.value.to_dict()
    assert list(error) == ["code", "message", "hint", "retryable", "trace_id"]
    assert error["code"] == "INVALID_ARGUMENT" and "teaches no output" in error["message"]
    assert error["hint"] and error["retryable"] is False and TRACE_ID.match(error["trace_id"])


def test_the_four_seed_examples(base44: AgentTrainingClient) -> None:
    progress: list[float] = []
    trained = base44.functions.train_agent(
        agent_id="agent_abc123",
        training_data=[
            {"input": "Question?", "expected_output": "Answer", "feedback": "correct"},
            {"input": "Hello there", "expected_output": "Greeting"},
        ],
        training_type="supervised",
        config={"epochs": 10, "learning_rate": 0.001},
        on_progress=lambda update: progress.append(update["percent_complete"]),
    )
    assert trained["success"] is True
    assert trained["data"]["training_id"].startswith("train_")
    assert trained["data"]["status"] == "completed"
    assert set(trained["data"]["metrics"]) >= {"accuracy", "loss"}
    assert trained["data"]["metrics"]["epochs_run"] == 10
    assert len(progress) >= 10 and progress == sorted(progress)

    generated = base44.functions.generate_synthetic_training_data(
        data_type="customer_queries",
        count=100,
        parameters={"difficulty": "medium", "topics": ["billing", "support"]},
    )
    assert generated["success"] is True
    assert len(generated["data"]["training_data"]) == 100
    assert {e["topic"] for e in generated["data"]["examples"]} == {"billing", "support"}
    assert generated["data"]["summary"]["generated_count"] == 100
    base44.functions.train_agent(
        agent_id="agent_abc123", training_data=generated["data"]["training_data"]
    )

    analysed = base44.functions.analyze_and_optimize(
        agent_id="agent_abc123", optimization_goals=["minimize_latency", "maximize_accuracy"]
    )
    assert analysed["success"] is True
    assert analysed["data"]["analysis"]["example_count"] == 10
    goals = {suggestion["goal"] for suggestion in analysed["data"]["suggestions"]}
    assert goals == {"minimize_latency", "maximize_accuracy"}

    record_feedback(base44, count=40)
    adapted = base44.functions.adapt_agent_behavior(
        agent_id="agent_abc123",
        performance_metrics={"success_rate": 0.85, "user_satisfaction": 0.90},
        adaptation_strategy="reinforcement",
    )
    assert adapted["success"] is True
    assert adapted["data"]["previous_version_id"].startswith("ver_")
    assert adapted["data"]["summary"] and isinstance(adapted["data"]["changes"], list)


def record_feedback(client: AgentTrainingClient, count: int) -> None:
    """Answer `count` generated queries and send whether each answer was right."""
    examples = client.functions.generate_synthetic_training_data(
        data_type="customer_queries", count=count, parameters={"topics": ["billing", "support"]}
    )["data"]["training_data"]
    answers = client.invoke_agent(agent_id="agent_abc123", inputs=[e["input"] for e in examples])
    for prediction, example in zip(answers.predictions, examples, strict=True):
        right = prediction.output == example["expected_output"]
        client.record_feedback(
            agent_id="agent_abc123",
            invocation_id=prediction.invocation_id,
            feedback="correct" if right else "incorrect",
        )


def test_seed_string_enums_are_checked_before_sending(base44: AgentTrainingClient) -> None:
    with pytest.raises(AgentTrainingError) as caught:
        base44.functions.train_agent(agent_id="agent_abc123", training_type="supervise")
    assert caught.value.status_code == grpc.StatusCode.INVALID_ARGUMENT
    assert "supervised, reinforcement, few_shot, transfer" in caught.value.message
    with pytest.raises(AgentTrainingError, match="unknown_field"):
        base44.functions.adapt_agent_behavior(agent_id="agent_abc123", unknown_field=1)


def test_training_that_fails_raises_the_jobs_error(base44: AgentTrainingClient) -> None:
    examples = base44.functions.generate_synthetic_training_data(
        data_type="customer_queries", count=60
    )["data"]["training_data"]
    with pytest.raises(AgentTrainingError) as caught:
        base44.functions.train_agent(
            agent_id="agent_abc123",
            training_data=examples,
            config={
                "epochs": 1000,
                "batch_size": 1,
                "max_duration_seconds": 1,
                "early_stopping": {"patience": 0},
            },
        )
    assert caught.value.code == "TRAINING_TIMEOUT" and caught.value.hint
