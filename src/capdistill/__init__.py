"""capdistill: capability distillation of LLMs under a token budget."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("capdistill")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
