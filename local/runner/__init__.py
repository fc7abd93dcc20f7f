"""Run the SAM application locally the way Lambda runs it, without Docker.

``python -m local.runner`` serves the template's API routes on loopback; each function runs
under the real Lambda Runtime Interface Emulator with ``awslambdaric``, against moto's
Secrets Manager and, by default, the local django-oauth-toolkit upstream.
"""
