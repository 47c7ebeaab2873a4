/**
 * The seed API's functions: `client.functions.trainAgent({...})` and the other three, taking the
 * seed's snake_case fields and string enums and resolving to `{success: true, data}`; failures
 * reject with an AgentTrainingError whose `toJSON()` is the seed's error object.
 */
import { create } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import {
  AdaptAgentBehaviorRequestSchema,
  AdaptAgentBehaviorResponseSchema,
  AnalyzeAndOptimizeRequestSchema,
  AnalyzeAndOptimizeResponseSchema,
  type AgentTrainingService,
  GenerateSyntheticTrainingDataRequestSchema,
  GenerationSummarySchema,
  SyntheticExampleSchema,
  TrainAgentRequestSchema,
  TrainingExampleSchema,
  TrainingMetricsSchema,
  TrainingProgressSchema,
  TrainingStatus,
  type GenerationSummary,
  type SyntheticExample,
} from "./contract.js";
import { AgentTrainingError } from "./errors.js";
import { fromPlain, toPlain, type Plain } from "./plain.js";

/** The seed's success response. */
export interface SeedResult<Data> {
  success: true;
  data: Data;
}

/** One training example, as in the seed. */
export interface SeedTrainingExample {
  input: string;
  expected_output: string;
  /** "correct", "incorrect" or a reward in [-1, 1] as text. */
  feedback?: string;
  context?: string[];
  propensity?: number;
}

/** Training configuration: the seed's `epochs` and `learning_rate`, and the contract's others. */
export interface SeedTrainingConfig {
  epochs?: number;
  learning_rate?: number;
  batch_size?: number;
  seed?: number;
  validation_split?: number;
  early_stopping?: { patience?: number; min_delta?: number };
  encoder?: string;
  base_agent_id?: string;
  base_version_id?: string;
  max_duration_seconds?: number;
  freeze_encoder_epochs?: number;
}

export type TrainingTypeName = "supervised" | "reinforcement" | "few_shot" | "transfer";

export interface TrainAgentParams {
  agent_id: string;
  training_data?: SeedTrainingExample[];
  training_type?: TrainingTypeName;
  config?: SeedTrainingConfig;
  request_id?: string;
  dataset_id?: string;
}

/** A progress event of a running job, as a plain object (TrainingProgress's fields). */
export type TrainingProgressUpdate = Plain & {
  training_id: string;
  sequence: number;
  phase: string;
  epoch: number;
  total_epochs: number;
  percent_complete: number;
};

/** Metrics of the finished training: at least the seed's `accuracy` and `loss`. */
export interface TrainingMetricsData {
  accuracy: number;
  loss: number;
  validation_accuracy: number;
  validation_loss: number;
  macro_f1: number;
  epochs_run: number;
  examples_per_second: number;
  duration_seconds: number;
  train_examples: number;
  validation_examples: number;
  policy_value: number;
}

/** `data` of trainAgent: the seed's `training_id`, `status` and `metrics`, and the new version. */
export interface TrainAgentData {
  training_id: string;
  agent_id: string;
  /** "completed", as in the seed (the job's status TRAINING_STATUS_SUCCEEDED). */
  status: "completed";
  version_id: string;
  metrics: TrainingMetricsData;
}

export interface GenerateSyntheticTrainingDataParams {
  data_type: string;
  count: number;
  parameters?: {
    difficulty?: "easy" | "medium" | "hard";
    topics?: string[];
    seed?: number;
    [name: string]: unknown;
  };
  request_id?: string;
  save_as?: string;
  chunk_size?: number;
}

/** `data` of generateSyntheticTrainingData. */
export interface SyntheticData {
  /** The examples in exactly the shape trainAgent's `training_data` takes. */
  training_data: SeedTrainingExample[];
  /** The same examples with where they came from (topic, intent, difficulty, generator). */
  examples: Plain[];
  /** Counts, duplicates removed, label counts, the saved dataset. */
  summary: Plain;
}

export interface AnalyzeAndOptimizeParams {
  agent_id: string;
  optimization_goals?: string[];
  version_id?: string;
  evaluation_data?: SeedTrainingExample[];
  apply_suggestion_id?: string;
  request_id?: string;
  dataset_id?: string;
  activate?: boolean;
}

export interface AdaptAgentBehaviorParams {
  agent_id: string;
  performance_metrics: Record<string, number>;
  adaptation_strategy?: string;
  targets?: Record<string, number>;
  dry_run?: boolean;
  request_id?: string;
}

/** Per-call options: a deadline, a cancellation signal and (training) a progress callback. */
export interface CallOptions {
  /** Deadline of the call in milliseconds. */
  timeoutMs?: number;
  /** Aborting it cancels the call (a training job goes on; cancel it with cancelTrainingJob). */
  signal?: AbortSignal;
}

export interface TrainOptions extends CallOptions {
  /** Called with each progress event while the job runs. */
  onProgress?: (progress: TrainingProgressUpdate) => void;
}

type Service = Client<typeof AgentTrainingService>;

export class SeedFunctions {
  constructor(
    private readonly rpc: Service,
    private readonly defaultTimeoutMs: number | undefined,
  ) {}

  /** Train an agent and resolve when the job ends; progress goes to `onProgress`. */
  async trainAgent(params: TrainAgentParams & { onProgress?: TrainOptions["onProgress"] }, options: TrainOptions = {}): Promise<SeedResult<TrainAgentData>> {
    const { onProgress = options.onProgress, ...fields } = params;
    const request = fromPlain(TrainAgentRequestSchema, fields);
    for await (const { event } of this.rpc.trainAgent(request, options)) {
      if (event?.kind.case === "progress" && onProgress) {
        const progress = toPlain(TrainingProgressSchema, event.kind.value);
        onProgress({ training_id: event.trainingId, sequence: Number(event.sequence), ...progress } as TrainingProgressUpdate);
      }
      if (event?.kind.case !== "finished") continue;
      const finished = event.kind.value;
      if (finished.status !== TrainingStatus.SUCCEEDED) {
        throw finished.error
          ? AgentTrainingError.fromDetail(finished.error)
          : new AgentTrainingError({
              code: "TRAINING_ERROR",
              message: `training ${event.trainingId} ended ${TrainingStatus[finished.status]}`,
              hint: "Read the job with getTrainingJob for its timeline.",
              retryable: false,
              trace_id: "",
            });
      }
      const metrics = finished.metrics ?? create(TrainingMetricsSchema);
      return {
        success: true,
        data: {
          training_id: event.trainingId,
          agent_id: request.agentId,
          status: "completed",
          version_id: finished.versionId,
          metrics: toPlain(TrainingMetricsSchema, metrics) as TrainingMetricsData,
        },
      };
    }
    throw new AgentTrainingError({
      code: "UNAVAILABLE",
      message: "the training stream ended before the job finished",
      hint: "Re-attach with watchTrainingJob(training_id) to follow the job to its end.",
      retryable: true,
      trace_id: "",
      status: "UNAVAILABLE",
    });
  }

  /** Generate `count` examples (streamed in chunks, gathered here) in trainAgent's shape. */
  async generateSyntheticTrainingData(params: GenerateSyntheticTrainingDataParams, options: CallOptions = {}): Promise<SeedResult<SyntheticData>> {
    const request = fromPlain(GenerateSyntheticTrainingDataRequestSchema, params);
    const examples: SyntheticExample[] = [];
    let summary: GenerationSummary | undefined;
    for await (const chunk of this.rpc.generateSyntheticTrainingData(request, options)) {
      examples.push(...chunk.examples);
      summary = chunk.summary ?? summary;
    }
    return {
      success: true,
      data: {
        training_data: examples.map(
          (e) => toPlain(TrainingExampleSchema, e.example ?? create(TrainingExampleSchema)) as unknown as SeedTrainingExample,
        ),
        examples: examples.map((e) => toPlain(SyntheticExampleSchema, e)),
        summary: summary ? toPlain(GenerationSummarySchema, summary) : {},
      },
    };
  }

  /** Evaluate an agent version and return measured suggestions for each goal. */
  async analyzeAndOptimize(params: AnalyzeAndOptimizeParams, options: CallOptions = {}): Promise<SeedResult<Plain>> {
    const request = fromPlain(AnalyzeAndOptimizeRequestSchema, params);
    const response = await this.rpc.analyzeAndOptimize(request, this.unaryOptions(options));
    return { success: true, data: toPlain(AnalyzeAndOptimizeResponseSchema, response) };
  }

  /** Adapt an agent's behaviour from production metrics, as a new version. */
  async adaptAgentBehavior(params: AdaptAgentBehaviorParams, options: CallOptions = {}): Promise<SeedResult<Plain>> {
    const request = fromPlain(AdaptAgentBehaviorRequestSchema, params);
    const response = await this.rpc.adaptAgentBehavior(request, this.unaryOptions(options));
    return { success: true, data: toPlain(AdaptAgentBehaviorResponseSchema, response) };
  }

  private unaryOptions(options: CallOptions): CallOptions {
    return { timeoutMs: options.timeoutMs ?? this.defaultTimeoutMs, signal: options.signal };
  }
}
