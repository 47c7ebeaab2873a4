/**
 * The seed API reference's four JavaScript examples, run against the real server through
 * `client.functions`. Each example's call is the seed's, word for word; only the client's
 * construction differs (`new AgentTrainingClient(address)` instead of the seed's SDK object).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { AgentTrainingClient, AgentTrainingError } from "../src/index.js";
import { startServer, type RunningServer } from "./server.js";

const TRACE_ID = /^[0-9a-f]{32}$/;

describe("the seed's examples through client.functions", () => {
  let server: RunningServer;
  let base44: AgentTrainingClient;

  before(async () => {
    server = await startServer();
    base44 = new AgentTrainingClient(server.address); // the one changed line
    await base44.rpc.createAgent({ agentId: "agent_abc123" });
  });

  after(async () => {
    base44?.close();
    await server?.stop();
  });

  test("trainAgent, verbatim: the seed's success response", async () => {
    const result = await base44.functions.trainAgent({
      agent_id: "agent_abc123",
      training_data: [
        { input: "Question?", expected_output: "Answer", feedback: "correct" }
      ],
      training_type: "supervised",
      config: {
        epochs: 10,
        learning_rate: 0.001
      }
    });
    assert.equal(result.success, true);
    assert.match(result.data.training_id, /^train_/);
    assert.equal(result.data.status, "completed");
    assert.equal(result.data.metrics.accuracy, 1);
    assert.equal(typeof result.data.metrics.loss, "number");
    assert.match(result.data.version_id, /^ver_/);
  });

  test("trainAgent with nothing to learn rejects with the seed's error object", async () => {
    const call = base44.functions.trainAgent({
      agent_id: "agent_abc123",
      training_data: [{ input: "Question?", expected_output: "Answer", feedback: "incorrect" }],
      training_type: "supervised",
    });
    await assert.rejects(call, (error: AgentTrainingError) => {
      assert.ok(error instanceof AgentTrainingError);
      assert.deepEqual(Object.keys(error.toJSON()), ["code", "message", "hint", "retryable", "trace_id"]);
      assert.equal(error.code, "INVALID_ARGUMENT");
      assert.match(error.message, /teaches no output/);
      assert.ok(error.hint);
      assert.equal(error.retryable, false);
      assert.match(error.trace_id, TRACE_ID);
      assert.equal(error.fieldViolations[0].field, "training_data");
      return true;
    });
  });

  test("trainAgent with a second output: the seed's success response", async () => {
    const progress: number[] = [];
    const result = await base44.functions.trainAgent({
      agent_id: "agent_abc123",
      training_data: [
        { input: "Question?", expected_output: "Answer", feedback: "correct" },
        { input: "Hello there", expected_output: "Greeting" },
      ],
      training_type: "supervised",
      config: {
        epochs: 10,
        learning_rate: 0.001,
      },
      onProgress: (update) => progress.push(update.percent_complete),
    });
    assert.equal(result.success, true);
    assert.match(result.data.training_id, /^train_/);
    assert.equal(result.data.status, "completed");
    assert.equal(typeof result.data.metrics.accuracy, "number");
    assert.equal(typeof result.data.metrics.loss, "number");
    assert.equal(result.data.metrics.epochs_run, 10);
    assert.match(result.data.version_id, /^ver_/);
    assert.ok(progress.length >= 10, `progress events: ${progress.length}`);
    assert.deepEqual(progress, [...progress].sort((a, b) => a - b));
  });

  test("generateSyntheticTrainingData, verbatim", async () => {
    const result = await base44.functions.generateSyntheticTrainingData({
      data_type: "customer_queries",
      count: 100,
      parameters: {
        difficulty: "medium",
        topics: ["billing", "support"],
      },
    });
    assert.equal(result.success, true);
    assert.equal(result.data.training_data.length, 100);
    for (const example of result.data.training_data) {
      assert.ok(example.input && example.expected_output);
    }
    assert.deepEqual(new Set(result.data.examples.map((e) => e.topic)), new Set(["billing", "support"]));
    assert.equal(result.data.examples[0].difficulty, "medium");
    assert.equal(result.data.summary.generated_count, 100);
    // What it made is what trainAgent takes: train the seed's agent on it for the next examples.
    const trained = await base44.functions.trainAgent({
      agent_id: "agent_abc123",
      training_data: result.data.training_data,
      training_type: "supervised",
    });
    assert.equal(trained.data.status, "completed");
    assert.equal(trained.data.metrics.train_examples + trained.data.metrics.validation_examples, 100);
  });

  test("analyzeAndOptimize, verbatim", async () => {
    const result = await base44.functions.analyzeAndOptimize({
      agent_id: "agent_abc123",
      optimization_goals: ["minimize_latency", "maximize_accuracy"],
    });
    assert.equal(result.success, true);
    const analysis = result.data.analysis as Record<string, any>;
    assert.equal(analysis.example_count, 10);
    assert.ok(analysis.accuracy >= 0 && analysis.accuracy <= 1);
    assert.ok(analysis.latency.p50_ms > 0);
    const goals = new Set((result.data.suggestions as Record<string, any>[]).map((s) => s.goal));
    assert.deepEqual(goals, new Set(["minimize_latency", "maximize_accuracy"]));
  });

  test("adaptAgentBehavior, verbatim, after feedback on 40 answers", async () => {
    const generated = await base44.functions.generateSyntheticTrainingData({
      data_type: "customer_queries",
      count: 40,
      parameters: { topics: ["billing", "support"], seed: 7 },
    });
    const answers = await base44.rpc.invokeAgent({
      agentId: "agent_abc123",
      inputs: generated.data.training_data.map((e) => e.input),
    });
    for (const [i, prediction] of answers.predictions.entries()) {
      const right = prediction.output === generated.data.training_data[i].expected_output;
      await base44.rpc.recordFeedback({
        agentId: "agent_abc123",
        invocationId: prediction.invocationId,
        feedback: right ? "correct" : "incorrect",
      });
    }
    const result = await base44.functions.adaptAgentBehavior({
      agent_id: "agent_abc123",
      performance_metrics: {
        success_rate: 0.85,
        user_satisfaction: 0.9,
      },
      adaptation_strategy: "reinforcement",
    });
    assert.equal(result.success, true);
    assert.match(result.data.previous_version_id as string, /^ver_/);
    assert.ok(result.data.summary);
    assert.ok(Array.isArray(result.data.changes));
  });
});
