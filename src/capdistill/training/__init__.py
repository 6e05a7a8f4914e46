"""Causal-LM training with Lightning: the synthetic world's models (teacher, student base) and the optimizer
settings a distillation run's rounds share."""
