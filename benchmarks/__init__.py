"""Benchmarks of simlib (``python -m benchmarks.<name>``)."""
