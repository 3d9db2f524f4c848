"""Measurement: the `bench` harness (harness/), `make bench` (suite.py), and the peer comparisons
with their probes (peers/). Figures are ratios against peers run in the same process or script,
never timed assertions in tests."""
