/**
 * Failing over (src/failover.ts) against the real server: a list of servers with one down, and a
 * training stream cut by a kill -9 of its server that goes on once the server is back.
 */
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { test } from "node:test";
import { AgentTrainingClient } from "../src/index.js";
import { targetsOf, withRequestId } from "../src/failover.js";
import { startServer } from "./server.js";

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((done) => probe.listen(0, "127.0.0.1", done));
  const { port } = probe.address() as { port: number };
  await new Promise((done) => probe.close(done));
  return port;
}

test("a target lists servers; creates get a requestId unless they have one", () => {
  assert.deepEqual(targetsOf("a:1, b:2"), ["a:1", "b:2"]);
  assert.throws(() => targetsOf(" , "), /names no server/);
  const made = withRequestId("createAgent", { agentId: "x" }) as { requestId: string };
  assert.match(made.requestId, /^[0-9a-f]{32}$/);
  assert.deepEqual(withRequestId("createAgent", { agentId: "x", requestId: "mine" }), { agentId: "x", requestId: "mine" });
  assert.deepEqual(withRequestId("getAgent", { agentId: "x" }), { agentId: "x" });
  const stream = withRequestId("analyzeAndOptimizeStream", { request: { agentId: "x" } }) as { request: { requestId: string } };
  assert.match(stream.request.requestId, /^[0-9a-f]{32}$/);
});

test("calls go to the servers that answer when one of the list is down", async () => {
  const server = await startServer();
  const client = new AgentTrainingClient(`127.0.0.1:${await freePort()},${server.address}`);
  try {
    await client.rpc.createAgent({ agentId: "listed" });
    for (let i = 0; i < 6; i++) {
      const { agent } = await client.rpc.getAgent({ agentId: "listed" });
      assert.equal(agent?.agentId, "listed");
    }
  } finally {
    client.close();
    await server.stop();
  }
});

test("a training stream cut by its server's death re-attaches once the server is back", async () => {
  const address = `127.0.0.1:${await freePort()}`;
  let server = await startServer({}, { address });
  const client = new AgentTrainingClient(address);
  try {
    await client.rpc.createAgent({ agentId: "follower" });
    const trainingData = ["card_arrival", "lost_or_stolen_card", "top_up_failed"].flatMap((label) =>
      Array.from({ length: 10 }, (_, i) => ({ input: `${label.replaceAll("_", " ")} question ${i}`, expectedOutput: label })),
    );
    const stream = client.rpc.trainAgent({
      agentId: "follower",
      trainingData,
      config: { epochs: 60, batchSize: 1, seed: 5n, earlyStopping: { patience: 0 } },
    });
    const sequences: bigint[] = [];
    let status = "";
    let killed = false;
    for await (const { event } of stream) {
      sequences.push(event!.sequence);
      if (event!.kind.case === "finished") status = String(event!.kind.value.status);
      if (sequences.length === 4 && !killed) {
        killed = true;
        await server.kill();
        server = await startServer({}, { address, dataDir: server.dataDir });
      }
    }
    assert.ok(killed);
    assert.deepEqual(sequences, sequences.map((_, i) => BigInt(i + 1)), "every event once, in order");
    assert.equal(status, "3"); // TRAINING_STATUS_SUCCEEDED
  } finally {
    client.close();
    await server.stop();
  }
});
