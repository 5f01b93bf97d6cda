"""Benchmarks: ``python -m benchmarks`` runs them all and prints each figure beside its baseline."""
