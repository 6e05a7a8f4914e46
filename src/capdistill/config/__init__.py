"""The config's typed groups with their range checks, token units, and where the shipped configs are."""
