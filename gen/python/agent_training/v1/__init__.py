"""agent_training.v1: generated from protos/agent_training/v1 by make proto; do not edit."""
