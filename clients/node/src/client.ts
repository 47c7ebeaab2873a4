/**
 * The client of agent_training.v1.AgentTrainingService over gRPC (HTTP/2), with two faces:
 * `client.rpc`, the typed client of every RPC (streams are async iterables), and
 * `client.functions`, the seed API's four functions.
 */
import { readFileSync } from "node:fs";
import type { SecureClientSessionOptions } from "node:http2";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { AgentTrainingService } from "./contract.js";
import type { TrainingEvent } from "./gen/agent_training/v1/training_pb.js";
import { AgentTrainingError } from "./errors.js";
import {
  MAX_ATTEMPTS,
  RETRIED_METHODS,
  RoundRobin,
  backoffMs,
  connectionLossAsUnavailable,
  isUnavailable,
  resumableEvents,
  sleep,
  targetsOf,
  withRequestId,
} from "./failover.js";
import { SeedFunctions } from "./functions.js";
import { DEFAULT_TARGET, ENV, settingsFromEnv, type TlsFiles } from "./settings.js";

export { DEFAULT_TARGET };

/** PEM for TLS: a file path (as the environment variables give), or the PEM itself as a Buffer. */
export type Pem = string | Buffer;

/** TLS of a client: a CA bundle to trust instead of Node's, and a client certificate for mutual TLS. */
export interface TlsOptions {
  /** CA bundle that signed the server's certificate; default: Node's CAs. */
  caCert?: Pem;
  /** Client certificate chain, for mutual TLS (with `clientKey`). */
  clientCert?: Pem;
  /** Private key of `clientCert`. */
  clientKey?: Pem;
}

export interface ClientOptions {
  /** Deadline in milliseconds of unary calls (streams have none unless given per call). Default 30000. */
  timeoutMs?: number;
  /** Largest message sent or received, in bytes. Default 64 MiB, as the server. */
  maxMessageBytes?: number;
  /** Interceptors (auth headers, tracing) of the underlying Connect transport. */
  interceptors?: Interceptor[];
  /** Bearer token sent with every call; default: AGENT_TRAINING_TOKEN. `""`: none. */
  token?: string;
  /**
   * TLS: `true` (Node's CAs), the CA and client certificate to use, or `false` for plaintext;
   * default: as AGENT_TRAINING_TLS, AGENT_TRAINING_CA_CERT, AGENT_TRAINING_CLIENT_CERT and
   * AGENT_TRAINING_CLIENT_KEY say (plaintext when none is set).
   */
  tls?: boolean | TlsOptions;
}

/** The typed client: one method per RPC, taking the request's fields. */
export type AgentTrainingRpc = Client<typeof AgentTrainingService>;

export class AgentTrainingClient {
  /** Typed client of every RPC; failures throw AgentTrainingError. */
  readonly rpc: AgentTrainingRpc;
  /** The seed API's functions: trainAgent, generateSyntheticTrainingData, analyzeAndOptimize, adaptAgentBehavior. */
  readonly functions: SeedFunctions;
  private readonly sessions: Http2SessionManager[];
  private closed = false;

  /**
   * What is not passed comes from the AGENT_TRAINING_* variables the CLI and the Python client
   * read (see settings.ts); an explicit argument or option always wins over them.
   *
   * @param target `host:port` of the service, or a URL (`http://host:port`; `https://` is TLS), or
   *   several of them separated by commas (replicas: calls go round robin, and fail over; see
   *   failover.ts); default: AGENT_TRAINING_TARGET, else `127.0.0.1:50051`.
   * @throws Error when a client certificate comes without its key (or the reverse), or a PEM
   *   file cannot be read.
   */
  constructor(target?: string, options: ClientOptions = {}) {
    const env = settingsFromEnv();
    const tls = options.tls === undefined ? env.tls : options.tls === true ? {} : options.tls;
    const token = options.token ?? env.token;
    const maxBytes = options.maxMessageBytes ?? 64 * 1024 * 1024;
    const timeoutMs = options.timeoutMs ?? 30_000;
    const secure = tls ? sessionOptions(tls) : undefined;
    this.sessions = [];
    const clients = targetsOf(target || env.target).map((each) => {
      const baseUrl = url(each, tls !== false);
      const sessions = new Http2SessionManager(baseUrl, { pingIntervalMs: 30_000 }, secure);
      this.sessions.push(sessions);
      const transport = createGrpcTransport({
        baseUrl,
        sessionManager: sessions,
        readMaxBytes: maxBytes,
        writeMaxBytes: maxBytes,
        interceptors: [...(token ? [bearer(token)] : []), ...(options.interceptors ?? [])],
      });
      return createClient(AgentTrainingService, transport);
    });
    this.rpc = wrapCalls(clients, timeoutMs, () => this.closed);
    this.functions = new SeedFunctions(this.rpc, timeoutMs);
  }

  /** Close the connections; calls still open fail with CANCELLED. */
  close(): void {
    this.closed = true;
    for (const sessions of this.sessions) sessions.abort();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** The base URL of a target: a URL stays as it is, save that TLS turns `http:` into `https:`. */
function url(target: string, tls: boolean): string {
  const withScheme = /^https?:\/\//.test(target) ? target : `http://${target}`;
  return tls ? withScheme.replace(/^http:/, "https:") : withScheme;
}

function sessionOptions(tls: TlsOptions | TlsFiles): SecureClientSessionOptions {
  if ((tls.clientCert === undefined) !== (tls.clientKey === undefined)) {
    throw new Error(`clientCert and clientKey go together (${ENV.clientCert}, ${ENV.clientKey})`);
  }
  const pem = (value: Pem | undefined) => (typeof value === "string" ? readFileSync(value) : value);
  return { ca: pem(tls.caCert), cert: pem(tls.clientCert), key: pem(tls.clientKey) };
}

/** Sends `authorization: Bearer <token>` with every call. */
function bearer(token: string): Interceptor {
  return (next) => (request) => {
    request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
}

type CallOptions = { timeoutMs?: number; signal?: AbortSignal };
type AnyCall = (request: unknown, options?: CallOptions) => unknown;
type AnyStream = (request: unknown, options?: CallOptions) => AsyncIterable<unknown>;
type TrainingResponse = { event?: TrainingEvent };
type Watch = (trainingId: string, fromSequence: bigint) => AsyncIterable<TrainingResponse>;

/**
 * Make every call fail with AgentTrainingError (Connect re-wraps what its interceptors throw, so
 * this wraps the methods), give unary calls a default deadline, as the Python client does (streams
 * keep none unless the call sets one), spread calls round robin over the servers, and fail over
 * (failover.ts).
 */
function wrapCalls(clients: AgentTrainingRpc[], timeoutMs: number, closed: () => boolean): AgentTrainingRpc {
  const servers = new RoundRobin(clients.length);
  const failure = (reason: unknown, options?: CallOptions) =>
    connectionLossAsUnavailable(AgentTrainingError.from(reason), closed() || options?.signal?.aborted === true);
  const watchStreams = clients.map(
    (client) => (client as unknown as Record<string, AnyStream>).watchTrainingJob,
  );
  /** Re-attaches a cut training stream (resumableEvents). */
  const watch = (trainingId: string, fromSequence: bigint) =>
    streamWithRetries(watchStreams, servers, MAX_ATTEMPTS, { trainingId, fromSequence }, {}, failure);
  const wrapped: Record<string, AnyCall> = {};
  for (const method of AgentTrainingService.methods) {
    const name = method.localName;
    const calls = clients.map((client) => (client as unknown as Record<string, AnyCall>)[name]);
    const attempts = RETRIED_METHODS.has(name) ? MAX_ATTEMPTS : 1;
    if (method.methodKind === "server_streaming") {
      wrapped[name] = (request, options) => {
        const sent = withRequestId(name, request);
        const stream = streamWithRetries(calls as AnyStream[], servers, attempts, sent, options, failure);
        if (name !== "trainAgent" && name !== "watchTrainingJob") return stream;
        return resumableEvents(stream as AsyncIterable<TrainingResponse>, watch as Watch);
      };
      continue;
    }
    const deadline = method.methodKind === "unary" ? timeoutMs : undefined;
    wrapped[name] = async (request, options = {}) => {
      const sent = withRequestId(name, request);
      for (let attempt = 1; ; attempt++) {
        try {
          const call = calls[servers.pick()];
          return await call(sent, { ...options, timeoutMs: options.timeoutMs ?? deadline });
        } catch (reason) {
          const error = failure(reason, options);
          if (attempt >= attempts || !isUnavailable(error)) throw error;
          await sleep(backoffMs(attempt));
        }
      }
    };
  }
  return wrapped as unknown as AgentTrainingRpc;
}

/** A server stream, retried on the next server while UNAVAILABLE comes before its first message. */
async function* streamWithRetries(
  calls: AnyStream[],
  servers: RoundRobin,
  attempts: number,
  request: unknown,
  options: CallOptions | undefined,
  failure: (reason: unknown, options?: CallOptions) => AgentTrainingError,
): AsyncGenerator<unknown> {
  for (let attempt = 1; ; attempt++) {
    let received = false;
    try {
      for await (const message of calls[servers.pick()](request, options)) {
        received = true;
        yield message;
      }
      return;
    } catch (reason) {
      const error = failure(reason, options);
      if (received || attempt >= attempts || !isUnavailable(error)) throw error;
      await sleep(backoffMs(attempt));
    }
  }
}
