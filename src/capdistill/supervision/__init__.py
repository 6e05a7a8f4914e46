"""Turning a budget slice into training examples: exact token accounting and teacher-written responses."""
