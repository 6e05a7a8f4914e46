"""capdistill: capability distillation of LLMs under a token budget."""

__version__ = "0.1.0"
