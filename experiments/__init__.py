"""Experiment runner, Hydra configuration, reports and benchmarks.

The only layer that imports Hydra.
"""
