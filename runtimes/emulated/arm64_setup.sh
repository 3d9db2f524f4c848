#!/usr/bin/env bash
# Builds an emulated-ARM64 (aarch64) Python environment that runs ExecuTorch .pte programs on
# ExecuTorch's aarch64 kernels (XNNPACK NEON) under qemu-user, from Debian's and PyPI's packages
# only. Idempotent: every step is skipped when its output is already there (delete
# SYSROOT/.setup/<step>.done to redo one step).
#
#   usage: bash setup.sh SYSROOT_DIR        (as root; needs Debian apt + PyPI)
#   env:   ET_VERSION (1.5.1), TORCH_VERSION (2.13.0), NCPU (2: CPUs in the fake ARM topology),
#          MIDR (0x00000000414fd0b0: Cortex-A76 r4p0), EXTRAS (1: also the pure-Python packages
#          that executorch.runtime / custom_ops' own modules import; 0: the lean set only)
#
# Layout:  SYSROOT/usr/bin/python3.11          Debian bookworm arm64 Python (mmdebstrap extract)
#          SYSROOT/site                        PyPI aarch64 wheels (pip --target), on PYTHONPATH
#          SYSROOT/usr/lib/aarch64-linux-gnu/  + stand-ins for the NVIDIA sonames torch links
#          SYSROOT/proc/cpuinfo, SYSROOT/sys/devices/system/cpu/...   fake Cortex-A76 topology
#          SYSROOT/.setup/                     host tools (venv with pip, pyelftools), wheel cache
set -euo pipefail

SR=${1:?usage: setup.sh SYSROOT_DIR}
mkdir -p "$SR"
SR=$(cd "$SR" && pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ET_VERSION=${ET_VERSION:-1.5.1}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
NCPU=${NCPU:-2}
MIDR=${MIDR:-0x00000000414fd0b0}
EXTRAS=${EXTRAS:-1}
SETUP=$SR/.setup
mkdir -p "$SETUP"
T_START=$(date +%s)
log() { echo "[setup +$(( $(date +%s) - T_START ))s] $*"; }
done_() { [[ -f $SETUP/$1.done ]]; }
mark() { touch "$SETUP/$1.done"; }
# pip minus the warnings this machine's pip.conf (extra-index-url file:///opt/pypi...) prints; keeps pip's exit status
quiet_pip() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

# 1. host packages: qemu-user-static (7.2 in bookworm), mmdebstrap, a cross assembler/linker for
#    the stubs (binutils only: 3 MB, no cross gcc needed).
if ! command -v qemu-aarch64-static >/dev/null || ! command -v mmdebstrap >/dev/null \
   || ! command -v aarch64-linux-gnu-ld >/dev/null; then
  log "apt-get install qemu-user-static mmdebstrap binutils-aarch64-linux-gnu"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    qemu-user-static mmdebstrap binutils-aarch64-linux-gnu >/dev/null
fi

# 2. arm64 Debian sysroot: only unpacked (extract variant: no maintainer scripts, no emulation).
#    python3.11-minimal + libpython3.11-stdlib give /usr/bin/python3.11 with its full stdlib;
#    libstdc++6/libgomp1 for torch, libatomic1 for executorch's _llm_runner.
if ! done_ sysroot; then
  log "mmdebstrap arm64 sysroot"
  rm -rf "$SR/bin" "$SR/lib" "$SR/usr" "$SR/etc" "$SR/var" "$SR/sbin" "$SR/dev" "$SR/tmp"
  # mmdebstrap wants an empty target directory: build next to it, then move in.
  TMPROOT=$SETUP/rootfs.tmp
  rm -rf "$TMPROOT"
  mmdebstrap --quiet --variant=extract --arch=arm64 \
    --include=python3.11-minimal,libpython3.11-stdlib,libstdc++6,libgomp1,libatomic1,zlib1g \
    bookworm "$TMPROOT" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main"
  for d in "$TMPROOT"/* ; do mv "$d" "$SR/"; done
  rm -rf "$TMPROOT"
  # Debian ships no .pyc for the stdlib (its postinst compiles them): compile with the host's
  # CPython 3.11 (same bytecode magic) so the emulated interpreter never compiles.
  python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    && python3 -m compileall -q -j 1 "$SR/usr/lib/python3.11" >/dev/null || true
  mark sysroot
fi

# 3. host venv: a current pip (for --platform resolution) and pyelftools (stub generator).
if ! done_ hostvenv; then
  log "host venv"
  python3 -m venv "$SETUP/hostvenv"
  quiet_pip "$SETUP/hostvenv/bin/pip" install -q -U "pip>=24" "pyelftools==0.33"
  mark hostvenv
fi
PIP="$SETUP/hostvenv/bin/pip"
# pip's --platform matches exact tags only: list every manylinux level glibc 2.36 accepts.
PLAT=(--platform manylinux2014_aarch64 --platform linux_aarch64)
for v in $(seq 17 36); do PLAT+=(--platform "manylinux_2_${v}_aarch64"); done
TARGET=(--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none)

# 4. PyPI aarch64 wheels, no dependency resolution: torch's aarch64 wheel pulls ~3 GB of CUDA
#    wheels, executorch's pulls coremltools (no aarch64 wheel) and its exporter's deps. Only what
#    the runtime imports is installed.
LEAN=("torch==$TORCH_VERSION" "executorch==$ET_VERSION" "typing_extensions>=4.10")
# imported by executorch.runtime/portable_lib (via executorch.exir), custom_ops.py (via
# torch._inductor), and executorch.extension.llm.runner: executorch's pins where it has them.
EXTRA=(numpy "mpmath==1.3.0" sympy filelock jinja2 markupsafe networkx fsspec flatbuffers
       ruamel.yaml tabulate pyyaml packaging "torchao>=0.18,<0.19")
PKGS=("${LEAN[@]}")
[[ $EXTRAS == 1 ]] && PKGS+=("${EXTRA[@]}")
WANT="${PKGS[*]}"
if ! done_ wheels || [[ "$(cat "$SETUP/wheels.list" 2>/dev/null)" != "$WANT" ]]; then
  log "pip download ${PKGS[*]}"
  mkdir -p "$SETUP/wheels"
  quiet_pip "$PIP" download -q --no-deps -d "$SETUP/wheels" "${PLAT[@]}" "${TARGET[@]}" "${PKGS[@]}"
  log "pip install --target $SR/site"
  rm -rf "$SR/site"
  # --no-index + find-links: install exactly the downloaded files; pip byte-compiles with the
  # host's 3.11, so the emulated interpreter never compiles either.
  quiet_pip "$PIP" install -q --no-deps --no-index --find-links "$SETUP/wheels" --target "$SR/site" \
    "${PLAT[@]}" "${TARGET[@]}" "${PKGS[@]}"
  test -f "$SR/site/torch/lib/libtorch_cpu.so" && test -d "$SR/site/executorch"
  echo "$WANT" > "$SETUP/wheels.list"
  rm -f "$SETUP/stubs.done"
  mark wheels
fi

# 5. stand-ins for the NVIDIA libraries torch's aarch64 wheel links (libcudart.so.13, cudnn,
#    cublas, nccl, ...; ~3 GB as wheels). torch's own libtorch_cuda.so stays: its static
#    initialisers only call nvcc's __cudaRegister* (stubbed silently), and loading it costs ~1 s
#    under emulation; stubbing it as well crashed torch._C's init (it hands out C++ objects).
if ! done_ stubs; then
  log "stub libraries"
  STUBDIR=$SR/usr/lib/aarch64-linux-gnu
  is_stub() { [[ -f $1 ]] && grep -aq ARM64_CPU_STUB_LIBRARY "$1"; }
  # drop the stubs of an earlier run first (they would count as present libraries)
  while read -r old; do is_stub "$old" && rm -f "$old"; done < <(cat "$SETUP/stubs.installed" 2>/dev/null)
  : > "$SETUP/stubs.installed"
  rm -rf "$SETUP/stubs-src"
  "$SETUP/hostvenv/bin/python" "$HERE/gen_stubs.py" "$SR" "$SR/site" "$SETUP/stubs-src" > "$SETUP/stubs-plan.json"
  for s in "$SETUP"/stubs-src/*.s; do
    so=$(basename "$s" .s)
    aarch64-linux-gnu-as -o "${s%.s}.o" "$s"
    aarch64-linux-gnu-ld -shared -z noexecstack --hash-style=gnu -soname "$so" \
      --version-script "${s%.s}.map" -o "$STUBDIR/$so" "${s%.s}.o"
    echo "$STUBDIR/$so" >> "$SETUP/stubs.installed"
  done
  mark stubs
fi

# 6. fake ARM CPU description. qemu-user -L SYSROOT opens SYSROOT/<path> for an absolute <path>
#    when that file exists, so these shadow the host's x86 /proc/cpuinfo and sysfs (pytorch's
#    cpuinfo library, which XNNPACK and ExecuTorch's threadpool use, aborts on the x86 ones).
if ! done_ cpuinfo || [[ "$(cat "$SETUP/cpuinfo.key" 2>/dev/null)" != "$NCPU $MIDR" ]]; then
  log "fake /proc/cpuinfo + sysfs ($NCPU x MIDR $MIDR)"
  mkdir -p "$SR/proc"
  variant=$(( (MIDR >> 20) & 0xf )); part=$(( (MIDR >> 4) & 0xfff )); rev=$(( MIDR & 0xf ))
  impl=$(( (MIDR >> 24) & 0xff ))
  : > "$SR/proc/cpuinfo"
  rm -rf "$SR/sys"
  for ((i = 0; i < NCPU; i++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x%02x\nCPU architecture: 8\nCPU variant\t: 0x%x\nCPU part\t: 0x%03x\nCPU revision\t: %d\n\n' \
      "$i" "$impl" "$variant" "$part" "$rev" >> "$SR/proc/cpuinfo"
    d=$SR/sys/devices/system/cpu/cpu$i
    mkdir -p "$d/regs/identification" "$d/topology" "$d/cpufreq"
    printf '0x%016x\n' "$MIDR" > "$d/regs/identification/midr_el1"
    echo 0 > "$d/regs/identification/revidr_el1"
    echo 0 > "$d/topology/physical_package_id"
    echo "$i" > "$d/topology/core_id"
    printf '%x\n' $((1 << i)) > "$d/topology/core_siblings"
    printf '%x\n' $((1 << i)) > "$d/topology/thread_siblings"
    echo 2000000 > "$d/cpufreq/cpuinfo_max_freq"
    echo 1000000 > "$d/cpufreq/cpuinfo_min_freq"
  done
  for f in possible present online; do echo "0-$((NCPU - 1))" > "$SR/sys/devices/system/cpu/$f"; done
  echo "$NCPU $MIDR" > "$SETUP/cpuinfo.key"
  mark cpuinfo
fi

# 7. smoke test under emulation
log "smoke test"
qemu-aarch64-static -L "$SR" -cpu cortex-a76 "$SR/usr/bin/python3.11" -c \
  'import platform, sys; print("python", sys.version.split()[0], platform.machine())'
log "done: $(du -sh "$SR" --exclude=.setup 2>/dev/null | cut -f1) in $SR (wheel cache $(du -sh "$SETUP/wheels" | cut -f1))"
