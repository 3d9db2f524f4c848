"""The wheel installs one import package, with the embedded model inside it."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_only_the_mobilellm_export_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("mobilellm_export-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"mobilellm_export", next(t for t in tops if t.endswith(".dist-info"))}
    for sub in ("model", "export", "quant", "runtimes", "benchmarks", "export/executorch", "export/onnx",
                "export/coreml", "benchmarks/harness", "benchmarks/peers"):
        assert f"mobilellm_export/{sub}/__init__.py" in names
    for asset in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json", "heldout.jsonl"):
        assert f"mobilellm_export/assets/tiny/{asset}" in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "mobilellm-export = mobilellm_export.cli:main" in entry_points
