"""One export: a loaded model and an ExportRequest in, a complete artifact directory out."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

from mobilellm_export.model.sources import LoadedModel
from mobilellm_export.model.tokenizer import TOKENIZER_FILES
from mobilellm_export.progress import Progress
from mobilellm_export.quant.schemes import expected_weight_bytes

from .artifact import write_artifact
from .registry import ExportRequest, get_backend

# Files that travel with a tokenizer (tokenizer_config.json names bos/eos for the C++ runners).
_TOKENIZER_COMPANIONS = ("tokenizer_config.json",)


def export_artifact(loaded: LoadedModel, request: ExportRequest, target: Path, *, overwrite: bool = False,
                    progress: Progress | None = None) -> dict[str, Any]:
    progress = progress or Progress(quiet=True)
    backend = get_backend(request.backend)
    module = backend.load()
    config = loaded.config

    def build(tmp: Path) -> dict[str, Any]:
        # Backends quantize in place; each export works on its own copy of the reference.
        model = copy.deepcopy(loaded.model)
        section = module.export(model, request, tmp, progress)
        tokenizer = _copy_tokenizer(loaded, tmp)
        stored = section.pop("stored_scheme", request.scheme)
        return {
            "backend": request.backend,
            "model": {"label": loaded.label, "source": loaded.checkpoint.source, "synthetic": loaded.synthetic,
                      "config": config.to_dict(), "parameters": config.parameter_counts()},
            "quantization": stored.to_dict(),
            "runtime": {"max_context": request.max_context, "vocab_size": config.vocab_size,
                        "bos_id": config.bos_id, "eos_ids": [config.eos_id], "tokenizer": tokenizer},
            "expected_weight_bytes": expected_weight_bytes(config, stored),
            backend.name: section,
        }

    progress.step(f"exporting {loaded.label} to {backend.name} {request.scheme.name} -> {target}")
    return write_artifact(target, build, overwrite=overwrite)


def _copy_tokenizer(loaded: LoadedModel, out: Path) -> str | None:
    tokenizer = loaded.tokenizer
    if tokenizer is None:
        return None
    shutil.copy2(tokenizer.path, out / tokenizer.path.name)
    for name in _TOKENIZER_COMPANIONS:
        companion = tokenizer.path.parent / name
        if companion.is_file():
            shutil.copy2(companion, out / name)
    assert tokenizer.path.name in TOKENIZER_FILES
    return tokenizer.path.name
