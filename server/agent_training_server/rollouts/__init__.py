"""Rollouts: a candidate version answers beside the active one until it is promoted or aborted."""
