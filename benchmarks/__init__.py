"""Benchmarks that print one JSON line each (never timed assertions in tests)."""
