"""Governed LLM fine-tuning across a lakehouse catalog and cloud ML services."""

__version__ = "0.1.0"
