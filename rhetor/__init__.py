"""Rhetor: the LLM gateway that engineers trust with their money and their users."""

__version__ = "0.2.0"

__all__ = ["__version__"]
