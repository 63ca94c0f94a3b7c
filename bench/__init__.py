"""Benchmarks of the bridge (``python -m bench``, docs/benchmarks.md) and the load-and-leak soak against the real
Asterisk sandbox (``scripts/soak``, bench/soak/)."""
