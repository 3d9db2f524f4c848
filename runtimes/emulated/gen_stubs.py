"""Generate aarch64 stand-in shared libraries for every NEEDED soname that no file in the sysroot
provides (in practice: the NVIDIA CUDA libraries PyPI's aarch64 torch links), so the dynamic loader
is satisfied. Each stub exports, with the right symbol versions, every symbol the sysroot's
libraries import from it and nothing else defines. A stub function writes
"[cuda-stub] NAME called" to stderr and returns 100 (cudaErrorNoDevice / CUDA_ERROR_NO_DEVICE; a
failure code for every other NVIDIA API); a few set their out-parameters first (device count 0,
error strings). Objects are zero-filled. On the CPU path none of them is ever called.

usage: python gen_stubs.py SYSROOT SITE_DIR OUT_DIR   (writes OUT_DIR/<soname>.s and .map)
Needs pyelftools. Prints the plan as JSON.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection, GNUVerSymSection

LIB_DIRS = ("lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu", "lib", "usr/lib")

# Only NVIDIA's libraries are stubbed; any other missing soname is a sysroot package to add.
STUBBABLE = ("libcu", "libnv", "libnccl")
# Unversioned imports go to the library their prefix names (else the importer's first missing one).
PREFIX_LIB = (("nccl", "libnccl.so.2"), ("cuFile", "libcufile.so.0"), ("curand", "libcurand.so.10"),
              ("cusparseLt", "libcusparseLt.so.0"), ("cudnn", "libcudnn.so.9"), ("nvshmem", "libnvshmem_host.so.3"))

# Out-parameters a caller may read even after an error return; everything else only returns 100.
SPECIAL = {
    # int* count
    "cudaGetDeviceCount": "str wzr, [x0]",
    "cuDeviceGetCount": "str wzr, [x0]",
    "cudaDriverGetVersion": "str wzr, [x0]",
    "cudaRuntimeGetVersion": "str wzr, [x0]",
    "cuDriverGetVersion": "str wzr, [x0]",
    # const char* cudaGetErrorString(cudaError_t) / cudaGetErrorName: return a string, not 100
    "cudaGetErrorString": "RETSTR",
    "cudaGetErrorName": "RETSTR",
    "cudnnGetErrorString": "RETSTR",
    "cublasGetStatusString": "RETSTR",
    "cublasGetStatusName": "RETSTR",
    "ncclGetErrorString": "RETSTR",
    "ncclGetLastError": "RETSTR",
    "nvrtcGetErrorString": "RETSTR",
    "cusparseGetErrorString": "RETSTR",
    "cusparseGetErrorName": "RETSTR",
    # CUresult cuGetErrorString(CUresult, const char** out)
    "cuGetErrorString": "OUTSTR",
    "cuGetErrorName": "OUTSTR",
}


def is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def elf_info(path: str):
    """(soname, needed, defined {name: set(versions)}, undefined [(name, version|None, type, bind)],
    verneed {version: file})."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        soname, needed = None, []
        for sec in elf.iter_sections():
            if isinstance(sec, DynamicSection):
                for tag in sec.iter_tags():
                    if tag.entry.d_tag == "DT_NEEDED":
                        needed.append(tag.needed)
                    elif tag.entry.d_tag == "DT_SONAME":
                        soname = tag.soname
        verneed: dict[int, tuple[str, str]] = {}
        versym = None
        verdef_names: dict[int, str] = {}
        for sec in elf.iter_sections():
            if isinstance(sec, GNUVerNeedSection):
                for vn, auxs in sec.iter_versions():
                    for aux in auxs:
                        verneed[aux.entry.vna_other] = (aux.name, vn.name)
            elif isinstance(sec, GNUVerSymSection):
                versym = sec
            elif sec.header.sh_type == "SHT_GNU_verdef":
                for vd, auxs in sec.iter_versions():
                    aux = next(iter(auxs))
                    verdef_names[vd.entry.vd_ndx] = aux.name
        dynsym = elf.get_section_by_name(".dynsym")
        defined: dict[str, set] = defaultdict(set)
        undefined = []
        if dynsym is not None:
            for i, sym in enumerate(dynsym.iter_symbols()):
                if not sym.name:
                    continue
                ndx = versym.get_symbol(i).entry.ndx if versym is not None else 0
                if isinstance(ndx, str):  # VER_NDX_LOCAL / VER_NDX_GLOBAL
                    ndx = 0 if ndx == "VER_NDX_LOCAL" else 1
                ndx &= 0x7FFF
                if sym.entry.st_shndx == "SHN_UNDEF":
                    ver = verneed.get(ndx)
                    undefined.append((sym.name, ver[0] if ver else None, sym.entry.st_info.type,
                                      sym.entry.st_info.bind, sym.entry.st_size))
                else:
                    defined[sym.name].add(verdef_names.get(ndx))
        return soname, needed, defined, undefined, {v: f for v, f in verneed.values()}


def main() -> None:
    sysroot, site, out = sys.argv[1:4]
    os.makedirs(out, exist_ok=True)
    files: dict[str, str] = {}  # basename -> path
    for d in [os.path.join(sysroot, x) for x in LIB_DIRS] + [site]:
        if not os.path.isdir(d):
            continue
        for root, _dirs, names in os.walk(d):
            if d != site and root != d:
                continue
            for n in names:
                if ".so" in n or n.startswith("ld-linux"):
                    p = os.path.join(root, n)
                    files.setdefault(n, p)
    available = set(files)
    infos = {}
    for n, p in files.items():
        if os.path.isfile(p) and is_elf(p):
            try:
                infos[p] = elf_info(p)
            except Exception as exc:  # noqa: BLE001
                print(f"skip {p}: {exc}", file=sys.stderr)
    for _p, (soname, *_r) in infos.items():
        if soname:
            available.add(soname)
    all_defined: set[str] = set()
    for _p, (_s, _n, defined, _u, _v) in infos.items():
        all_defined.update(defined)

    missing: dict[str, list[str]] = defaultdict(list)  # soname -> users
    for p, (_s, needed, _d, _u, _v) in infos.items():
        if not p.startswith(site):
            continue
        for n in needed:
            if n not in available:
                missing[n].append(os.path.relpath(p, site))

    bad = {m: u for m, u in missing.items() if not m.startswith(STUBBABLE)}
    if bad:
        sys.exit(f"missing non-NVIDIA libraries (add their Debian packages to the sysroot): {bad}")

    # soname -> {symbol: (version, type, size)}
    stubs: dict[str, dict[str, tuple]] = {m: {} for m in missing}
    versions: dict[str, set] = {m: set() for m in missing}
    for p, (_s, needed, _d, undefined, vfiles) in infos.items():
        miss_here = [n for n in needed if n in missing]
        if not miss_here:
            continue
        for name, ver, typ, bind, size in undefined:
            if ver is not None:
                target = vfiles.get(ver)
                if target not in missing:
                    continue
            else:
                if name in all_defined or bind == "STB_WEAK":
                    continue
                target = next((lib for pre, lib in PREFIX_LIB if name.startswith(pre) and lib in miss_here),
                              miss_here[0])
            versions[target].add(ver) if ver else None
            prev = stubs[target].get(name)
            if prev is None or (prev[0] is None and ver):
                stubs[target][name] = (ver, typ, max(size, prev[2] if prev else 0))

    plan = {}
    for so, syms in sorted(stubs.items()):
        write_stub(out, so, syms, versions[so])
        plan[so] = {"symbols": len(syms), "objects": sum(1 for v in syms.values() if v[1] == "STT_OBJECT"),
                    "versions": sorted(versions[so]), "needed_by": sorted(missing[so])}
    json.dump(plan, sys.stdout, indent=1)
    print()


def write_stub(out: str, soname: str, syms: dict[str, tuple], vers: set) -> None:
    asm = [".text", "__stub_report:",
           "  mov x0, #2", "  mov x8, #64", "  svc #0",  # write(2, x1, x2)
           "  mov w0, #100", "  ret"]
    data = [".data", ".balign 16", "__stub_scratch: .zero 4096", ".balign 16"]
    strs = [".section .rodata", "__stub_marker: .asciz \"ARM64_CPU_STUB_LIBRARY\"", "__stub_errstr: .asciz \"CUDA is not available (aarch64 CPU-only stub library)\""]
    by_ver: dict[str | None, list[str]] = defaultdict(list)
    for i, (name, (ver, typ, size)) in enumerate(sorted(syms.items())):
        by_ver[ver].append(name)
        if typ == "STT_OBJECT":
            sz = max(size, 8)
            data += [f".globl {name}", f".type {name}, %object", f".size {name}, {sz}", f"{name}:",
                     f"  .zero {sz}", ".balign 16"]
            continue
        msg = f"[cuda-stub] {name} called ({soname})\\n"
        strs.append(f".Lmsg{i}: .ascii \"{msg}\"")
        mlen = len(msg) - 1  # the \\n escape is one byte
        special = SPECIAL.get(name)
        body = [f".globl {name}", f".type {name}, %function", f"{name}:"]
        if special == "RETSTR":
            body += ["  adrp x0, __stub_errstr", "  add x0, x0, :lo12:__stub_errstr", "  ret"]
        elif name.startswith(("_Z", "__cuda")):
            # nvcc's __cudaRegisterFatBinary & co., which the static initialiser of every CUDA
            # object in libtorch_cuda.so calls (36k calls at import): silently return a pointer
            # to zeroed scratch memory (the fat-binary handle). Same for C++ functions, which
            # may return a reference.
            body += ["  adrp x0, __stub_scratch", "  add x0, x0, :lo12:__stub_scratch", "  ret"]
        else:
            if special == "OUTSTR":
                body += ["  adrp x9, __stub_errstr", "  add x9, x9, :lo12:__stub_errstr", "  str x9, [x1]"]
            elif special:
                body.append(f"  {special}")
            body += [f"  adrp x1, .Lmsg{i}", f"  add x1, x1, :lo12:.Lmsg{i}", f"  mov x2, #{mlen}",
                     "  b __stub_report"]
        asm += body
    with open(os.path.join(out, soname + ".s"), "w") as f:
        f.write("\n".join(asm + data + strs) + "\n")
    with open(os.path.join(out, soname + ".map"), "w") as f:
        for ver in sorted(v for v in by_ver if v):
            f.write(f"{ver} {{ global: " + " ".join(f"{n};" for n in by_ver[ver]) + " };\n")
        unv = by_ver.get(None, [])
        # unversioned symbols (and the local helpers) go in an anonymous-like default node
        glob = ("global: " + " ".join(f"{n};" for n in unv)) if unv else ""
        f.write(("STUB_BASE " if vers else "") + "{ " + glob + " local: *; };\n")


if __name__ == "__main__":
    main()
