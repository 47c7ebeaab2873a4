"""Synthetic training data: grammar, catalog, rewriting, dedup and the generation loop.

See docs/synthetic.md.
"""
