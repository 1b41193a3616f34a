"""Experiment runner, Hydra configuration, reports and benchmarks: the only layer that knows Hydra."""
