"""Benchmark harness: published schemas (specs), generation with optional injection or merged weights (run)."""
