"""The synthetic world's models: building, caching and loading teacher and student base."""
