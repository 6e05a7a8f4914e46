"""Per-run result records (and, later, collecting sweeps and drawing figures)."""
