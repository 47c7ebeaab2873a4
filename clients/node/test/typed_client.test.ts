/** The typed client covers the contract: one method per RPC, none missing, none extra. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { AgentTrainingClient, contract } from "../src/index.js";

test("client.rpc has a method for every RPC of the service", () => {
  const client = new AgentTrainingClient("127.0.0.1:1");
  const expected = contract.AgentTrainingService.methods.map((method) => method.localName).sort();
  const proto = readFileSync(fileURLToPath(new URL("../../../../protos/agent_training/v1/service.proto", import.meta.url)), "utf8");
  const declared = [...proto.matchAll(/^\s*rpc (\w+)\(/gm)].map(([, name]) => name[0].toLowerCase() + name.slice(1));
  assert.deepEqual(expected, declared.sort(), "the generated service matches protos/");
  assert.deepEqual(Object.keys(client.rpc).sort(), expected);
  for (const name of expected) assert.equal(typeof (client.rpc as unknown as Record<string, unknown>)[name], "function");
  client.close();
});

test("a server that cannot be reached fails UNAVAILABLE, retryable", async () => {
  const client = new AgentTrainingClient("127.0.0.1:1", { timeoutMs: 5_000 });
  await assert.rejects(client.rpc.listAgents({}), { status: "UNAVAILABLE", code: "UNAVAILABLE", retryable: true });
  client.close();
});
