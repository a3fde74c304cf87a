"""Benchmarks: each prints JSON, its result on the last line."""
