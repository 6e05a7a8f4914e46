"""Probing models on capabilities and tasks."""
