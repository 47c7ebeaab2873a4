/**
 * TypeScript client of the Agent Training Service.
 *
 * ```ts
 * import { AgentTrainingClient } from "@agent-training/client";
 * const client = new AgentTrainingClient("127.0.0.1:50051");
 * const result = await client.functions.trainAgent({ agent_id: "support-bot", training_data, training_type: "supervised" });
 * ```
 */
export { AgentTrainingClient, DEFAULT_TARGET, type AgentTrainingRpc, type ClientOptions } from "./client.js";
export { AgentTrainingError, type FieldViolation, type SeedError, type StatusName } from "./errors.js";
export * from "./functions.js";
export { fromPlain, toPlain, type Plain } from "./plain.js";
export * as contract from "./contract.js";
