"""Credit-risk models, their training loop and their metrics. Plain torch; never imports flwr."""
