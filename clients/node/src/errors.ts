/**
 * The one error type the client throws: the seed's error object `{code, message, hint, retryable,
 * trace_id}` read from the rich status details (`grpc-status-details-bin`), plus the gRPC facts.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorDetailSchema, type ErrorDetail } from "./gen/agent_training/v1/errors_pb.js";
import { BadRequestSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.js";

/** An invalid request field, from the status's BadRequest details. */
export interface FieldViolation {
  field: string;
  description: string;
}

/** The seed's error object, as the service documents it (docs/errors.md). */
export interface SeedError {
  code: string;
  message: string;
  hint: string;
  retryable: boolean;
  trace_id: string;
}

/** gRPC status names by code number (Connect's `Code` uses the same numbers). */
const STATUS_NAMES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
] as const;

/** A gRPC status name such as `NOT_FOUND`. */
export type StatusName = (typeof STATUS_NAMES)[number];

export class AgentTrainingError extends Error implements SeedError {
  override name = "AgentTrainingError";
  /** Stable error code, e.g. `AGENT_NOT_FOUND` (docs/errors.md). */
  readonly code: string;
  /** How to fix or work around the problem. */
  readonly hint: string;
  /** Whether the same call may succeed later. */
  readonly retryable: boolean;
  /** OpenTelemetry trace id of the request on the server (empty for client-side failures). */
  readonly trace_id: string;
  /** The gRPC status, e.g. `NOT_FOUND`; `UNKNOWN` for a training job that ended in failure. */
  readonly status: StatusName;
  /** Invalid fields, for INVALID_ARGUMENT. */
  readonly fieldViolations: FieldViolation[];
  /** How long to wait before retrying, when the server said. */
  readonly retryDelaySeconds: number | undefined;

  constructor(
    fields: SeedError & {
      status?: StatusName;
      fieldViolations?: FieldViolation[];
      retryDelaySeconds?: number;
      cause?: unknown;
    },
  ) {
    super(fields.message, { cause: fields.cause });
    this.code = fields.code;
    this.hint = fields.hint;
    this.retryable = fields.retryable;
    this.trace_id = fields.trace_id;
    this.status = fields.status ?? "UNKNOWN";
    this.fieldViolations = fields.fieldViolations ?? [];
    this.retryDelaySeconds = fields.retryDelaySeconds;
  }

  /** The seed's error object. */
  toJSON(): SeedError {
    return {
      code: this.code,
      message: this.message,
      hint: this.hint,
      retryable: this.retryable,
      trace_id: this.trace_id,
    };
  }

  /** The error a training job ended with (its TrainingFinished.error). */
  static fromDetail(detail: ErrorDetail, status: StatusName = "UNKNOWN"): AgentTrainingError {
    return new AgentTrainingError({
      code: detail.code,
      message: detail.message,
      hint: detail.hint,
      retryable: detail.retryable,
      trace_id: detail.traceId,
      status,
    });
  }

  /**
   * Decode a failed call. The service's errors carry an ErrorDetail; failures without one
   * (a deadline or cancellation on this side, another server) keep the gRPC status as the code.
   */
  static from(reason: unknown): AgentTrainingError {
    if (reason instanceof AgentTrainingError) return reason;
    const error = ConnectError.from(reason);
    const status = STATUS_NAMES[error.code] ?? "UNKNOWN";
    const [detail] = error.findDetails(ErrorDetailSchema);
    const fieldViolations = error
      .findDetails(BadRequestSchema)
      .flatMap((bad) => bad.fieldViolations.map((v) => ({ field: v.field, description: v.description })));
    const [retryInfo] = error.findDetails(RetryInfoSchema);
    const delay = retryInfo?.retryDelay;
    return new AgentTrainingError({
      code: detail?.code || status,
      message: detail?.message || error.rawMessage || status,
      hint: detail?.hint ?? "",
      retryable: detail ? detail.retryable : error.code === Code.Unavailable,
      trace_id: detail?.traceId ?? "",
      status,
      fieldViolations,
      retryDelaySeconds: delay ? Number(delay.seconds) + delay.nanos / 1e9 : undefined,
      cause: reason,
    });
  }
}
