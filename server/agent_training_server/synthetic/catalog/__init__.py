"""Built-in content of the synthetic data generators: topic grammars, styles and the lexicon."""
