"""Three-party credit data: synthetic population, real files, validation, splits, preprocessing.

Plain pandas/numpy/scikit-learn code; it never imports flwr, torch or Hydra.
"""
