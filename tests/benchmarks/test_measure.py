"""Peer benchmarks' child measurement: a command's own peak memory, not its parent's."""

import sys

from mobilellm_export.benchmarks.peers.measure import run_measured

TOUCH = "x = bytearray({n}); [x.__setitem__(i, 1) for i in range(0, len(x), 4096)]; print('done')"


def test_a_commands_peak_is_its_own_not_its_large_parents(tmp_path):
    parent = bytearray(600_000_000)  # this process is then far larger than the command
    for i in range(0, len(parent), 4096):
        parent[i] = 1
    measured = run_measured([sys.executable, "-c", TOUCH.format(n=80_000_000)], tmp_path / "log")
    assert measured.returncode == 0 and measured.log.read_text().strip() == "done"
    # The command's 80 MB and its interpreter; a figure inherited from this process would be > 0.6 GB.
    assert 80e6 <= measured.peak_rss_bytes < 200e6, measured.peak_rss_bytes
    assert measured.seconds > 0
    del parent


def test_exit_status_and_a_missing_program_come_back(tmp_path):
    assert run_measured([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "a").returncode == 3
    missing = run_measured([str(tmp_path / "no-such-program")], tmp_path / "b")
    assert missing.returncode == 127 and "cannot run" in missing.log.read_text()
