"""The one exception type for bad input: the CLI prints its message as a single line."""


class CapdistillError(ValueError):
    """Bad input (config, data, paths), detected before compute."""
