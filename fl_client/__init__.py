"""Flower ClientApp: one party's node (a lender, the bureau, the social platform).

Never imports ``fl_server`` or Hydra; reads its own data and trains with the ``models`` package.
"""
