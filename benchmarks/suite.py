"""`make bench`: the synthetic-weight 125M, 125M-LS and R1-140M models (random weights with the
published shapes; every report labels them so) exported for every backend and scheme of the suite,
and SmolLM2-135M's real weights (fetched through pip, never committed) at ExecuTorch and ONNX int4,
then measured by the harness (`mobilellm-export bench`: stock runners, the Python adapter next to
them, and on the real weights perplexity and agreement), each artifact in its own process.

    python -m mobilellm_export.benchmarks.suite [--work out/bench/suite] [--quick] [--no-real-weights]

Exports that already exist in --work with a valid manifest are reused (ExecuTorch's lowering of
the LS model alone takes about a quarter of an hour on 2 cores). Core ML packages are exported and
checked structurally but not measured off macOS. The peers have scripts of their own in
benchmarks/peers/ (`make bench-peers`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from mobilellm_export.export.plan import artifact_folder
from mobilellm_export.runtimes.manifest import ArtifactError, read_manifest

from .realweights import ensure_smollm2
from .synthetic import write_synthetic_checkpoint

# R1-140M next to 125M: a similar trunk, but a 128k vocabulary makes its shared matrix half the weights.
PRESETS = ("125M", "125M-LS", "R1-140M")
# (backend, scheme) of the suite: each backend's smallest scheme and ONNX's int8 too.
SUITE = (("executorch", "int4"), ("onnx", "int4"), ("onnx", "int8"), ("coreml", "int4"))
# Real weights: each backend's 4-bit artifact, the codes of one quantization stage (GPTQ by default).
REAL = (("executorch", "int4"), ("onnx", "int4"))
CONTEXT = 1024


def ensure_checkpoint(work: Path, preset: str) -> Path:
    directory = work / "checkpoints" / preset
    if not (directory / "model.safetensors").is_file():
        print(f"writing a synthetic {preset} checkpoint (random weights)", flush=True)
        write_synthetic_checkpoint(preset, directory)
    return directory


def ensure_artifact(work: Path, preset: str, checkpoint: Path, backend: str, scheme: str) -> Path:
    out = work / preset
    directory = out / artifact_folder(backend, scheme)
    try:
        read_manifest(directory)
        print(f"reusing {directory}", flush=True)
        return directory
    except ArtifactError:
        pass
    print(f"exporting {preset} {backend} {scheme}", flush=True)
    subprocess.run([sys.executable, "-m", "mobilellm_export.cli", "--quiet", "export", "--model", str(checkpoint),
                    "--backend", backend, "--quant", scheme, "--max-context", str(CONTEXT), "--output", str(out),
                    "--overwrite"], check=True)
    return directory


def ensure_together(checkpoint: Path, out: Path, pairs: tuple[tuple[str, str], ...]) -> list[Path]:
    """Artifacts of one scheme for several backends, exported in one call when any is missing, so
    the quantization stage (GPTQ on real weights: minutes) runs once for all of them."""
    directories = [out / artifact_folder(b, q) for b, q in pairs]
    try:
        for directory in directories:
            read_manifest(directory)
        print(f"reusing {', '.join(map(str, directories))}", flush=True)
        return directories
    except ArtifactError:
        pass
    (scheme,) = {q for _, q in pairs}
    print(f"exporting {checkpoint}: {', '.join(b for b, _ in pairs)} {scheme}", flush=True)
    subprocess.run([sys.executable, "-m", "mobilellm_export.cli", "--quiet", "export", "--model", str(checkpoint),
                    "--backend", *(b for b, _ in pairs), "--quant", scheme, "--max-context", str(CONTEXT),
                    "--output", str(out), "--overwrite"], check=True)
    return directories


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("out/bench/suite"))
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--weights", type=Path, default=Path("out/weights"), help="where the real weights are kept")
    parser.add_argument("--no-real-weights", action="store_true", help="the synthetic shapes only")
    args = parser.parse_args(argv)
    work = args.work
    artifacts = []
    for preset in PRESETS:
        checkpoint = ensure_checkpoint(work, preset)
        for backend, scheme in SUITE:
            artifacts.append(ensure_artifact(work, preset, checkpoint, backend, scheme))
    if not args.no_real_weights:
        artifacts += ensure_together(ensure_smollm2(args.weights), work / "smollm2-135m", REAL)
    # Artifact directories are named by backend and scheme only; the report names them by path.
    cmd = [sys.executable, "-m", "mobilellm_export.cli", "bench", *map(str, artifacts),
           "--repeats", "2" if args.quick else "5", "--json", str(work / "results.json"),
           "--report", str(work / "report.md"), "--plots", str(work / "plots")]
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
