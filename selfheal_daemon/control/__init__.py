"""The control endpoint: its server, the client the CLI uses, and the dashboard page."""
