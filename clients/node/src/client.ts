/**
 * The client of agent_training.v1.AgentTrainingService over gRPC (HTTP/2), with two faces:
 * `client.rpc`, the typed client of every RPC (streams are async iterables), and
 * `client.functions`, the seed API's four functions.
 */
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { AgentTrainingService } from "./contract.js";
import { AgentTrainingError, translated } from "./errors.js";
import { SeedFunctions } from "./functions.js";

export const DEFAULT_TARGET = "127.0.0.1:50051";

export interface ClientOptions {
  /** Deadline in milliseconds of unary calls (streams have none unless given per call). Default 30000. */
  timeoutMs?: number;
  /** Largest message sent or received, in bytes. Default 64 MiB, as the server. */
  maxMessageBytes?: number;
  /** Interceptors (auth headers, tracing) of the underlying Connect transport. */
  interceptors?: Interceptor[];
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
   * @param target `host:port` of the service, or a URL (`http://host:port`).
   */
  constructor(target: string = DEFAULT_TARGET, options: ClientOptions = {}) {
    const baseUrl = /^https?:\/\//.test(target) ? target : `http://${target}`;
    const maxBytes = options.maxMessageBytes ?? 64 * 1024 * 1024;
    const timeoutMs = options.timeoutMs ?? 30_000;
    this.sessions = new Http2SessionManager(baseUrl, { pingIntervalMs: 30_000 });
    const transport = createGrpcTransport({
      baseUrl,
      sessionManager: this.sessions,
      readMaxBytes: maxBytes,
      writeMaxBytes: maxBytes,
      interceptors: options.interceptors ?? [],
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
