"""Benchmarks (``raynas bench …``): each compares against a baseline run in the same process."""
