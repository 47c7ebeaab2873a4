/**
 * Failing over between replicas, as the Python client does (its failover.py):
 *
 * - a target may list several servers, `host:port,host:port`: calls go round robin over them;
 * - UNAVAILABLE means the call did not take effect, so the calls that are safe to send twice are
 *   retried with exponential backoff on the next server (AIP-194): reads, invokeAgent,
 *   recordFeedback and the creates, which always carry a `requestId` (one is made when the caller
 *   gives none), so a retried create returns what the first attempt made;
 * - a training stream (trainAgent, watchTrainingJob) cut by UNAVAILABLE after its first event
 *   re-attaches by itself with `watchTrainingJob(trainingId, last sequence + 1)`: every event
 *   once, in order, across the death or restart of the server it was on.
 */
import { randomUUID } from "node:crypto";
import { AgentTrainingError } from "./errors.js";

/** Unary and server-streaming methods retried after UNAVAILABLE. */
export const RETRIED_METHODS = new Set([
  "trainAgent",
  "generateSyntheticTrainingData",
  "generateSyntheticExamples",
  "analyzeAndOptimize",
  "analyzeAndOptimizeStream",
  "getAnalysisJob",
  "watchAnalysisJob",
  "adaptAgentBehavior",
  "createAgent",
  "getAgent",
  "listAgents",
  "listAgentVersions",
  "getTrainingJob",
  "listTrainingJobs",
  "watchTrainingJob",
  "invokeAgent",
  "recordFeedback",
  "getDataset",
  "listDatasets",
  "listDatasetExamples",
]);

/** Creates whose request takes a `requestId` (analyzeAndOptimizeStream: in its `request`). */
const CREATES = new Set([
  "trainAgent",
  "generateSyntheticTrainingData",
  "generateSyntheticExamples",
  "analyzeAndOptimize",
  "adaptAgentBehavior",
  "createAgent",
]);

/** Attempts of one retried call (as gRPC's retry policy of the Python client). */
export const MAX_ATTEMPTS = 4;
/** How long a cut training stream keeps trying to re-attach, in milliseconds. */
export const REATTACH_MS = 120_000;

/** The servers a target names: one, or a comma-separated list. */
export function targetsOf(target: string): string[] {
  const targets = target.split(",").map((part) => part.trim()).filter(Boolean);
  if (targets.length === 0) throw new Error(`target ${JSON.stringify(target)} names no server`);
  return targets;
}

/** The request with a fresh requestId when the call is a create and the caller gave none. */
export function withRequestId(method: string, request: unknown): unknown {
  if (method === "analyzeAndOptimizeStream") {
    const outer = (request ?? {}) as { request?: Record<string, unknown> };
    return { ...outer, request: withRequestId("analyzeAndOptimize", outer.request ?? {}) };
  }
  if (!CREATES.has(method)) return request;
  const fields = (request ?? {}) as Record<string, unknown>;
  return fields.requestId ? fields : { ...fields, requestId: randomUUID().replaceAll("-", "") };
}

/**
 * Pause after failed attempt `attempt` (1, 2...): drawn at random below 100 ms doubling (at most
 * 1 s), as gRPC's retries: enough to reach another replica, short enough that a server nobody can
 * reach is still answered UNAVAILABLE within a short deadline.
 */
export function backoffMs(attempt: number): number {
  return Math.random() * Math.min(100 * 2 ** (attempt - 1), 1_000);
}

export function isUnavailable(error: unknown): boolean {
  return error instanceof AgentTrainingError && error.status === "UNAVAILABLE";
}

/**
 * A call's failure, with a lost connection named UNAVAILABLE: Connect for Node ends the streams of
 * an HTTP/2 connection that closes under them (a server killed, a network cut) CANCELLED, as it
 * ends a call the caller aborted. A CANCELLED that neither the caller (`signal`, `close()`) nor
 * the server (which sends its error object) asked for is the connection's loss.
 */
export function connectionLossAsUnavailable(
  error: AgentTrainingError,
  callerCancelled: boolean,
): AgentTrainingError {
  if (error.status !== "CANCELLED" || error.trace_id || callerCancelled) return error;
  return new AgentTrainingError({
    code: "CONNECTION_LOST",
    message: `the connection to the server was lost (${error.message})`,
    hint: "Retry: the call did not complete; another server of the target, or the same one once it is back, can take it.",
    retryable: true,
    trace_id: "",
    status: "UNAVAILABLE",
    cause: error,
  });
}

export const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

/** Round robin over `count` servers: each call starts on the next one. */
export class RoundRobin {
  private next = 0;
  constructor(private readonly count: number) {}
  pick(): number {
    const index = this.next;
    this.next = (this.next + 1) % this.count;
    return index;
  }
}

interface TrainingEventLike {
  trainingId: string;
  sequence: bigint;
  kind: { case: string | undefined };
}

/**
 * The events of `first`; when UNAVAILABLE cuts them after the first one, the events of
 * `watch(trainingId, last + 1)`, retried with growing pauses for `reattachMs`.
 */
export async function* resumableEvents<T extends { event?: TrainingEventLike }>(
  first: AsyncIterable<T>,
  watch: (trainingId: string, fromSequence: bigint) => AsyncIterable<T>,
  reattachMs = REATTACH_MS,
): AsyncGenerator<T> {
  let trainingId = "";
  let last = 0n;
  let current = first;
  let cutAt = 0;
  let pause = 500;
  for (;;) {
    try {
      for await (const response of current) {
        const event = response.event;
        if (event === undefined || event.sequence <= last) continue;
        trainingId = event.trainingId;
        last = event.sequence;
        cutAt = 0;
        pause = 500;
        yield response;
        if (event.kind.case === "finished") return;
      }
      return;
    } catch (error) {
      if (!isUnavailable(error) || !trainingId) throw error;
      cutAt ||= Date.now();
      if (Date.now() - cutAt + pause > reattachMs) throw error;
      await sleep(pause);
      pause = Math.min(pause * 2, 5_000);
      current = watch(trainingId, last + 1n);
    }
  }
}
