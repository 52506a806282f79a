"""Tuning sweeps: rerun them when the model changes, and set the constants they print (docs/BENCHMARKS.md)."""
