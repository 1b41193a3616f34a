"""Differential privacy: settings, accounting math and the ledger. Never imports flwr or Hydra."""
