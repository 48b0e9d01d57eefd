"""Serving the trained pair with Ray Serve: an OpenAI-compatible HTTP API in front of two agent deployments.

Pure parts (request checks, auth, the protocol loop, response shapes) import no Ray; ``app`` wires the deployments.
"""
