"""The one exception type for a one-line error: the CLI prints its message as a single line."""


class CapdistillError(ValueError):
    """Bad input (config, data, paths), detected before compute where the config shows it, or a run stopped by
    its machine (a full disk, a run directory another process holds), said with what was kept."""
