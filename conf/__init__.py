"""The Hydra config groups, packaged so that an installed credit-fl finds them."""
