"""The `mobilellm-export bench` harness: measure artifacts in child processes (run, child, adb,
runner_stats), report them (report) and compare against a baseline (compare)."""
