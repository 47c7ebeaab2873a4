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
import { AgentTrainingError, translated } from "./errors.js";
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
  private readonly sessions: Http2SessionManager;

  /**
   * What is not passed comes from the AGENT_TRAINING_* variables the CLI and the Python client
   * read (see settings.ts); an explicit argument or option always wins over them.
   *
   * @param target `host:port` of the service, or a URL (`http://host:port`; `https://` is TLS);
   *   default: AGENT_TRAINING_TARGET, else `127.0.0.1:50051`.
   * @throws Error when a client certificate comes without its key (or the reverse), or a PEM
   *   file cannot be read.
   */
  constructor(target?: string, options: ClientOptions = {}) {
    const env = settingsFromEnv();
    const tls = options.tls === undefined ? env.tls : options.tls === true ? {} : options.tls;
    const token = options.token ?? env.token;
    const baseUrl = url(target || env.target, tls !== false);
    const maxBytes = options.maxMessageBytes ?? 64 * 1024 * 1024;
    const timeoutMs = options.timeoutMs ?? 30_000;
    this.sessions = new Http2SessionManager(baseUrl, { pingIntervalMs: 30_000 }, tls ? sessionOptions(tls) : undefined);
    const transport = createGrpcTransport({
      baseUrl,
      sessionManager: this.sessions,
      readMaxBytes: maxBytes,
      writeMaxBytes: maxBytes,
      interceptors: [...(token ? [bearer(token)] : []), ...(options.interceptors ?? [])],
    });
    this.rpc = wrapCalls(createClient(AgentTrainingService, transport), timeoutMs);
    this.functions = new SeedFunctions(this.rpc, timeoutMs);
  }

  /** Close the connection; calls still open fail with CANCELLED. */
  close(): void {
    this.sessions.abort();
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

type AnyCall = (request: unknown, options?: { timeoutMs?: number }) => unknown;

/**
 * Make every call fail with AgentTrainingError (Connect re-wraps what its interceptors throw, so
 * this wraps the methods) and give unary calls a default deadline, as the Python client does;
 * streams keep none unless the call sets one.
 */
function wrapCalls(client: AgentTrainingRpc, timeoutMs: number): AgentTrainingRpc {
  const calls = client as unknown as Record<string, AnyCall>;
  const wrapped: Record<string, AnyCall> = {};
  for (const method of AgentTrainingService.methods) {
    const call = calls[method.localName];
    if (method.methodKind === "server_streaming") {
      wrapped[method.localName] = (request, options) => translated(call(request, options) as AsyncIterable<unknown>);
      continue;
    }
    const deadline = method.methodKind === "unary" ? timeoutMs : undefined;
    wrapped[method.localName] = async (request, options = {}) => {
      try {
        return await call(request, { ...options, timeoutMs: options.timeoutMs ?? deadline });
      } catch (reason) {
        throw AgentTrainingError.from(reason);
      }
    };
  }
  return wrapped as unknown as AgentTrainingRpc;
}
