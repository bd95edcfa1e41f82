"""The benchmark: `make bench` (python -m bench) measures the local stack and writes bench/results/latest.json."""
