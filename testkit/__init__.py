"""What the tests and the benchmark share, and nothing a service runs: the model of the rules, an
HTTP client for the front door, a webhook receiver."""
