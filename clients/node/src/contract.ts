/** The contract agent_training.v1: every generated message, enum and the service descriptor. */
export * from "./gen/agent_training/v1/adaptation_pb.js";
export * from "./gen/agent_training/v1/agents_pb.js";
export * from "./gen/agent_training/v1/analysis_pb.js";
export * from "./gen/agent_training/v1/errors_pb.js";
export * from "./gen/agent_training/v1/invocation_pb.js";
export * from "./gen/agent_training/v1/rollouts_pb.js";
export * from "./gen/agent_training/v1/service_pb.js";
export * from "./gen/agent_training/v1/synthetic_pb.js";
export * from "./gen/agent_training/v1/training_pb.js";
