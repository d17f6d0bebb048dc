"""The model's life in production: its events and pure policy (``policy.decide_model``), the
healer that feeds it, the monitor, integrity re-checks, the deployer, the retrain runner and the
workers' admin client.
"""
