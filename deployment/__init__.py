"""Flower's deployment engine: the apps ``flwr run`` submits, and a partner's node.

``deployment.server_app`` and ``deployment.client_app`` are the ServerApp and ClientApp of a real
deployment (the Flower app in ``deployment/flower_app`` names them); ``deployment.node`` starts a
partner's node. They sit above ``experiments`` because a run's settings are the runner's.
"""
