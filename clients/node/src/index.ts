/**
 * TypeScript client of the Agent Training Service.
 *
 * ```ts
 * import { AgentTrainingClient } from "@agent-training/client";
 * const client = new AgentTrainingClient(); // AGENT_TRAINING_TARGET, else 127.0.0.1:50051
 * const result = await client.functions.trainAgent({ agent_id: "support-bot", training_data, training_type: "supervised" });
 * ```
 */
export { AgentTrainingClient, DEFAULT_TARGET, type AgentTrainingRpc, type ClientOptions, type Pem, type TlsOptions } from "./client.js";
export { ENV, settingsFromEnv, type ClientSettings, type TlsFiles } from "./settings.js";
export { AgentTrainingError, type FieldViolation, type SeedError, type StatusName } from "./errors.js";
export * from "./functions.js";
export { fromPlain, toPlain, type Plain } from "./plain.js";
export * as contract from "./contract.js";
