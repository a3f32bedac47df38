"""interp: sparse dictionaries, evals and circuits on TransformerLens models."""

__version__ = "0.1.0"
