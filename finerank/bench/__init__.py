"""Benchmarks of the engine: finerank vs the official reference code, matmul ceilings, reports."""
