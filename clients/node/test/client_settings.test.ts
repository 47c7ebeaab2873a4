/**
 * `new AgentTrainingClient()` reads AGENT_TRAINING_TARGET, the token and the TLS variables as the
 * CLI and the Python client do, against a real server with TLS and a token file; explicit
 * arguments win.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { AgentTrainingClient, AgentTrainingError, DEFAULT_TARGET, ENV, settingsFromEnv } from "../src/index.js";
import { certificates, startServer, type Certificates, type RunningServer } from "./server.js";

const TOKEN = "token-node-settings-0001";
const NOBODY = "127.0.0.1:1"; // nothing listens there: a refused connection, UNAVAILABLE at once

async function failure(call: Promise<unknown>): Promise<AgentTrainingError> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof AgentTrainingError, String(error));
    return error;
  }
  assert.fail("the call succeeded");
}

/**
 * The call failed in the transport, before any RPC reached the service (no trace_id). A plaintext
 * HTTP/2 connection to a TLS server ends CANCELLED in Connect for Node, a refused one UNAVAILABLE.
 */
function assertTransportFailure(error: AgentTrainingError, statuses = ["UNAVAILABLE", "CANCELLED"]): void {
  assert.ok(statuses.includes(error.status), `${error.status}: ${error.message}`);
  assert.equal(error.trace_id, "");
}

/** Run `use` with a client, then close it. */
async function using<T>(client: AgentTrainingClient, use: (client: AgentTrainingClient) => Promise<T>): Promise<T> {
  try {
    return await use(client);
  } finally {
    client.close();
  }
}

describe("settingsFromEnv", () => {
  test("unset or blank variables keep the defaults", () => {
    assert.deepEqual(settingsFromEnv({}), { target: DEFAULT_TARGET, token: undefined, tls: false });
    const blank = Object.fromEntries(Object.values(ENV).map((name) => [name, "  "]));
    assert.deepEqual(settingsFromEnv(blank), { target: DEFAULT_TARGET, token: undefined, tls: false });
  });

  test("every variable is read, with the CLI's names and spellings", () => {
    const settings = settingsFromEnv({
      AGENT_TRAINING_TARGET: "svc.example:443",
      AGENT_TRAINING_TOKEN: " secret\n",
      AGENT_TRAINING_CA_CERT: "ca.pem",
      AGENT_TRAINING_CLIENT_CERT: "client.pem",
      AGENT_TRAINING_CLIENT_KEY: "client.key",
    });
    assert.deepEqual(settings, {
      target: "svc.example:443",
      token: "secret",
      tls: { caCert: "ca.pem", clientCert: "client.pem", clientKey: "client.key" },
    });
    for (const [value, tls] of [["1", true], ["TRUE", true], ["yes", true], ["0", false], ["no", false]] as const) {
      assert.equal(settingsFromEnv({ AGENT_TRAINING_TLS: value }).tls !== false, tls, value);
    }
  });

  test("a client certificate without its key is refused, naming the variables", () => {
    process.env[ENV.clientCert] = "client.pem";
    try {
      assert.throws(() => new AgentTrainingClient(), /AGENT_TRAINING_CLIENT_KEY/);
    } finally {
      delete process.env[ENV.clientCert];
    }
  });
});

describe("a client without arguments against a TLS server with tokens", () => {
  let folder: string;
  let pki: Certificates;
  let server: RunningServer;

  before(async () => {
    folder = mkdtempSync(join(tmpdir(), "agent-training-settings-"));
    pki = await certificates(folder);
    const tokens = join(folder, "tokens.json");
    writeFileSync(tokens, JSON.stringify({ tokens: [{ name: "node", tenant: "tenant-a", scopes: ["admin"], token: TOKEN }] }));
    server = await startServer({
      AGENT_TRAINING_AUTH_TOKEN_FILE: tokens,
      AGENT_TRAINING_TLS_CERT_FILE: pki.cert,
      AGENT_TRAINING_TLS_KEY_FILE: pki.key,
    });
  });

  after(async () => {
    await server?.stop();
    rmSync(folder, { recursive: true, force: true });
  });

  afterEach(() => {
    for (const name of Object.values(ENV)) delete process.env[name];
  });

  function environment(values: Partial<Record<keyof typeof ENV, string>>): void {
    for (const [key, value] of Object.entries(values)) process.env[ENV[key as keyof typeof ENV]] = value;
  }

  test("reads AGENT_TRAINING_TARGET, AGENT_TRAINING_TOKEN and AGENT_TRAINING_CA_CERT", async () => {
    environment({ target: server.address, token: TOKEN, caCert: pki.ca });
    const created = await using(new AgentTrainingClient(), (client) => client.rpc.createAgent({ agentId: "from-env" }));
    assert.equal(created.agent?.agentId, "from-env");
  });

  test("a missing or wrong token is UNAUTHENTICATED", async () => {
    environment({ target: server.address, caCert: pki.ca });
    const missing = await using(new AgentTrainingClient(), (client) => failure(client.rpc.listAgents({})));
    assert.equal(missing.status, "UNAUTHENTICATED");
    assert.equal(missing.code, "TOKEN_MISSING");
    environment({ token: "not-a-known-token" });
    const wrong = await using(new AgentTrainingClient(), (client) => failure(client.rpc.listAgents({})));
    assert.equal(wrong.status, "UNAUTHENTICATED");
    assert.equal(wrong.code, "TOKEN_INVALID");
  });

  test("explicit arguments win over the variables", async () => {
    environment({ target: NOBODY, token: "not-a-known-token", caCert: join(folder, "absent.pem") });
    const options = { token: TOKEN, tls: { caCert: pki.ca }, timeoutMs: 10_000 };
    const listed = await using(new AgentTrainingClient(server.address, options), (client) => client.rpc.listAgents({}));
    assert.ok(listed.agents.some((agent) => agent.agentId === "from-env"));
    environment({ caCert: pki.ca });
    const unreachable = await using(new AgentTrainingClient(undefined, { timeoutMs: 5_000 }), (client) =>
      failure(client.rpc.listAgents({})),
    );
    assertTransportFailure(unreachable, ["UNAVAILABLE"]);
    environment({ target: server.address, token: TOKEN });
    const plaintext = await using(new AgentTrainingClient(undefined, { tls: false, timeoutMs: 5_000 }), (client) =>
      failure(client.rpc.listAgents({})),
    );
    assertTransportFailure(plaintext);
    const noToken = await using(new AgentTrainingClient(undefined, { token: "" }), (client) => failure(client.rpc.listAgents({})));
    assert.equal(noToken.code, "TOKEN_MISSING");
  });

  test("without a TLS variable the client speaks plaintext, which a TLS server refuses", async () => {
    environment({ target: server.address, token: TOKEN });
    const error = await using(new AgentTrainingClient(undefined, { timeoutMs: 5_000 }), (client) => failure(client.rpc.listAgents({})));
    assertTransportFailure(error);
  });
});
