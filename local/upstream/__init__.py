"""A real OAuth2 authorization server (django-oauth-toolkit) for local runs and tests.

Loopback only, seeded with a demo user and a confidential client. Run it with
``python -m local.upstream --port 0``; it prints one JSON ready line on stdout.
"""
