"""Running ExecuTorch artifacts on an emulated ARM64 CPU (qemu-user), the only way on an x86
machine to run the kernels phones run (XNNPACK's NEON / dot-product paths). Speeds measured here
are an emulator's, never a device figure.

`arm64_setup.sh` builds the emulated environment from Debian's and PyPI's packages (`make
arm64-env`); `greedy_driver.py` is the script that runs inside it; `qemu.py` drives both.
"""
