"""Structured config schemas, validation and unit parsing."""
