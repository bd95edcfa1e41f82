"""A sensor fleet simulator: N sensors streaming readings to Metrics at a given rate, over any ingest path.

`python -m simulator --help` (or `make simulate ARGS="..."`); the benchmark (bench/) drives it too.
"""
