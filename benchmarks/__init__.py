"""Benchmarks and the demo job: measured as ratios against peers run in the same process."""
