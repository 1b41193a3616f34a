"""Flower ServerApp: coordinates the parties' training rounds (horizontal and vertical federation).

Never imports ``fl_client`` or Hydra; receives frozen settings (built from the Hydra config in
simulation).
"""
