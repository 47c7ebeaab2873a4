/**
 * Node and Python against the same real server: one event sequence for every subscriber, the
 * errors the Python service raises arriving whole in Node, and deadlines and cancellation from
 * Node.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { toJson } from "@bufbuild/protobuf";
import { AgentTrainingClient, AgentTrainingError, contract, fromPlain, type SeedTrainingExample } from "../src/index.js";
import { python, startServer, type RunningServer } from "./server.js";

const TRACE_ID = /^[0-9a-f]{32}$/;

async function rejection(call: Promise<unknown> | AsyncIterable<unknown>): Promise<AgentTrainingError> {
  try {
    if (Symbol.asyncIterator in call) {
      for await (const _ of call);
    } else {
      await call;
    }
  } catch (error) {
    assert.ok(error instanceof AgentTrainingError, String(error));
    return error;
  }
  assert.fail("the call succeeded");
}

async function eventually(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    assert.ok(Date.now() < deadline, "condition not met in time");
    await sleep(50);
  }
}

describe("Node and Python clients on one server", () => {
  let server: RunningServer;
  let client: AgentTrainingClient;
  let data: SeedTrainingExample[];

  before(async () => {
    server = await startServer({ OTEL_TRACES_EXPORTER: "console", OTEL_BSP_SCHEDULE_DELAY: "100" });
    client = new AgentTrainingClient(server.address);
    await client.rpc.createAgent({ agentId: "polyglot" });
    const generated = await client.functions.generateSyntheticTrainingData({
      data_type: "customer_queries",
      count: 120,
      parameters: { topics: ["billing", "support"] },
    });
    data = generated.data.training_data;
  });

  after(async () => {
    client?.close();
    await server?.stop();
  });

  test("a Node subscriber and a Python one see the same event sequence", async () => {
    const request = { agent_id: "polyglot", training_data: data, config: { epochs: 5 } };
    const stream = client.rpc.trainAgent(trainRequest(request));
    const started: unknown[] = [];
    let watchers: Promise<[unknown[], unknown[]]> | undefined;
    for await (const { event } of stream) {
      started.push(toJson(contract.TrainingEventSchema, event!));
      // Both subscribe while the job runs: stored events are replayed, then live ones follow.
      watchers ??= Promise.all([python("watch", server.address, event!.trainingId), watchInNode(event!.trainingId)]);
    }
    const [fromPython, fromNode] = await watchers!;
    assert.ok(started.length >= 10, `events: ${started.length}`);
    assert.deepEqual(fromNode, started);
    assert.deepEqual(fromPython, started);
  });

  test("the functions facade returns the same data in Node and Python", async () => {
    const node = await client.functions.generateSyntheticTrainingData({
      data_type: "customer_queries",
      count: 100,
      parameters: { difficulty: "medium", topics: ["billing", "support"] },
    });
    assert.deepEqual(await python("generate", server.address), node);
  });

  test("an error raised by the service arrives in Node with its code, hint and trace_id", async () => {
    const inNode = await rejection(client.rpc.getAgent({ agentId: "nobody" }));
    const inPython = await python("error", server.address, "nobody");
    assert.equal(inNode.status, "NOT_FOUND");
    assert.equal(inPython.status, "NOT_FOUND");
    const { trace_id: nodeTrace, ...nodeError } = inNode.toJSON();
    const { trace_id: pythonTrace, status: _, ...pythonError } = inPython;
    assert.deepEqual(nodeError, pythonError);
    assert.equal(nodeError.code, "AGENT_NOT_FOUND");
    assert.ok(nodeError.hint);
    assert.match(nodeTrace, TRACE_ID);
    assert.match(pythonTrace, TRACE_ID);
    assert.notEqual(nodeTrace, pythonTrace);
    // The trace_id is the server's own trace of the call: its exported span carries it.
    await eventually(() => server.output().includes(nodeTrace));
  });

  test("a streamed call's error carries the same object", async () => {
    const error = await rejection(client.rpc.trainAgent(trainRequest({ agent_id: "nobody", training_data: data })));
    assert.equal(error.code, "AGENT_NOT_FOUND");
    assert.match(error.trace_id, TRACE_ID);
    await eventually(() => server.output().includes(error.trace_id));
  });

  test("a job that fails in a Python worker rejects trainAgent with the job's error", async () => {
    const error = await rejection(
      client.functions.trainAgent({
        agent_id: "polyglot",
        training_data: data,
        config: { epochs: 1000, batch_size: 1, max_duration_seconds: 1, early_stopping: { patience: 0 } },
      }),
    );
    assert.equal(error.code, "TRAINING_TIMEOUT");
    const jobs = await client.rpc.listTrainingJobs({ agentId: "polyglot", status: contract.TrainingStatus.FAILED });
    const recorded = await python("job", server.address, jobs.jobs[0].trainingId);
    assert.deepEqual(error.toJSON(), recorded);
  });

  describe("deadlines and cancellation from Node", () => {
    let trainingId: string;

    before(async () => {
      // A job that runs for minutes unless cancelled.
      const stream = client.rpc.trainAgent(
        trainRequest({ agent_id: "polyglot", training_data: data, config: { epochs: 1000, batch_size: 1, early_stopping: { patience: 0 } } }),
      );
      for await (const { event } of stream) {
        trainingId = event!.trainingId;
        if (event!.kind.case === "progress") break; // leaving the loop closes the stream
      }
    });

    after(async () => {
      // Frees the worker when a test failed before cancelling the job itself.
      await client.rpc.cancelTrainingJob({ trainingId }).catch(() => undefined);
    });

    test("a unary call past its deadline fails DEADLINE_EXCEEDED", async () => {
      const started = Date.now();
      const error = await rejection(
        client.functions.analyzeAndOptimize(
          { agent_id: "polyglot", optimization_goals: ["maximize_accuracy"] },
          { timeoutMs: 1 },
        ),
      );
      assert.equal(error.status, "DEADLINE_EXCEEDED");
      assert.equal(error.code, "DEADLINE_EXCEEDED");
      assert.ok(Date.now() - started < 5_000, `${Date.now() - started} ms`);
    });

    test("a stream past its deadline fails DEADLINE_EXCEEDED and the job goes on", async () => {
      const started = Date.now();
      const error = await rejection(client.rpc.watchTrainingJob({ trainingId }, { timeoutMs: 300 }));
      assert.equal(error.status, "DEADLINE_EXCEEDED");
      assert.ok(Date.now() - started < 5_000, `${Date.now() - started} ms`);
      const { job } = await client.rpc.getTrainingJob({ trainingId });
      assert.equal(job!.status, contract.TrainingStatus.RUNNING);
    });

    test("aborting a call cancels it; the job goes on until CancelTrainingJob", async () => {
      const abort = new AbortController();
      const watching = client.rpc.watchTrainingJob({ trainingId }, { signal: abort.signal });
      setTimeout(() => abort.abort(), 200);
      const error = await rejection(watching);
      assert.equal(error.status, "CANCELLED");
      assert.equal((await client.rpc.getTrainingJob({ trainingId })).job!.status, contract.TrainingStatus.RUNNING);

      await client.rpc.cancelTrainingJob({ trainingId });
      const last = (await watchInNode(trainingId)).at(-1) as { finished: { status: string } };
      assert.equal(last.finished.status, "TRAINING_STATUS_CANCELLED");
    });
  });

  async function watchInNode(trainingId: string): Promise<unknown[]> {
    const events: unknown[] = [];
    for await (const { event } of client.rpc.watchTrainingJob({ trainingId, fromSequence: 1n })) {
      events.push(toJson(contract.TrainingEventSchema, event!));
    }
    return events;
  }
});

/** A TrainAgentRequest written in the seed's shape. */
function trainRequest(request: object) {
  return fromPlain(contract.TrainAgentRequestSchema, request);
}
