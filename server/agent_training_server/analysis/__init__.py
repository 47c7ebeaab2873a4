"""Analysis of agent versions: evaluation metrics and measured optimisations."""
