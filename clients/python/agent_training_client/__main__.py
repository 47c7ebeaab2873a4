"""``python -m agent_training_client``: the agent-training command line."""

from agent_training_client.cli import main

main()
