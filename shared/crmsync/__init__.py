"""crmsync: the sync rules, models, provider adapters and stores (the Lambda layer)."""

__version__ = "0.1.0"
