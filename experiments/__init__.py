"""The command line: thin adapters over :mod:`credit_fl`, the deploy orchestrator, the benchmarks.

``run``, ``score``, ``monitor``, ``rerate``, ``compare`` and the plots; :mod:`experiments.deploy`
(a federation on this machine); :mod:`experiments.bench`. The only layer that imports Hydra or
matplotlib. Ray's loopback switch is set by :mod:`credit_fl`, which every runner goes through.
"""
