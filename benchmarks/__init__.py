"""Benchmarks run by hand (`.venv/bin/python -m benchmarks.<name>` from the repo root); see README.md."""
