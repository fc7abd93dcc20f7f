"""Each route's schema, compiled ahead of time (layers/broker/generate_validators.py)."""
