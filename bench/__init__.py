"""Benchmarks: each module prints one JSON line of figures, with ratios against a baseline from the same run."""
