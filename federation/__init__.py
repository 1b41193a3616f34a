"""What the server and the clients agree on: federation settings and the message protocol.

Imported by both ``fl_server`` and ``fl_client``, which never import each other.
"""
