"""The Python side of the Node client's cross-language tests.

Runs one call with the Python client and prints its result as JSON on stdout.

Usage: python_peer.py COMMAND ADDRESS [ARGS...]
  watch ADDRESS TRAINING_ID    every event of WatchTrainingJob from sequence 1, as proto3 JSON
  error ADDRESS AGENT_ID       the seed's error object of GetAgent on a missing agent
  job ADDRESS TRAINING_ID      the error object a finished job records (GetTrainingJob)
  generate ADDRESS             the functions facade's result for the seed's generate example
"""

import json
import sys

from google.protobuf import json_format

from agent_training_client import AgentTrainingClient, AgentTrainingError


def main(command: str, address: str, *args: str) -> object:
    """Run one command against the server at `address` and return its JSON-able result."""
    with AgentTrainingClient(address) as client:
        if command == "watch":
            events = client.watch_training_job(args[0], from_sequence=1, timeout=120)
            return [json_format.MessageToDict(event) for event in events]
        if command == "error":
            try:
                client.get_agent(args[0])
            except AgentTrainingError as error:
                return {**error.to_dict(), "status": error.status_code.name}
            return None
        if command == "job":
            return json_format.MessageToDict(
                client.get_training_job(args[0]).error,
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
            )
        if command == "generate":
            return client.functions.generate_synthetic_training_data(
                data_type="customer_queries",
                count=100,
                parameters={"difficulty": "medium", "topics": ["billing", "support"]},
            )
    raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    json.dump(main(*sys.argv[1:]), sys.stdout)
