"""One export: a loaded model and a planned export in, a complete artifact directory out."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

from mobilellm_export.errors import UnsupportedError
from mobilellm_export.model.sources import LoadedModel
from mobilellm_export.progress import Progress
from mobilellm_export.quant.schemes import expected_weight_bytes
from mobilellm_export.runtimes.tokenizer import TOKENIZER_FILES

from .contract import Backend, ExportRequest
from .writer import write_artifact

# Files that travel with a tokenizer (tokenizer_config.json names bos/eos for the C++ runners).
_TOKENIZER_COMPANIONS = ("tokenizer_config.json",)


def export_artifact(loaded: LoadedModel, backend: Backend, request: ExportRequest, target: Path, *,
                    overwrite: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    progress = progress or Progress(quiet=True)
    if request.scheme.name not in backend.schemes:
        raise UnsupportedError(f"the {backend.name} backend has no {request.scheme.name!r} scheme; "
                               f"use {', '.join(backend.schemes)}")
    backend.require()
    config = loaded.config

    def build(tmp: Path) -> dict[str, Any]:
        # Backends may change the modules they wrap; each export works on its own copy.
        model = copy.deepcopy(loaded.model)
        result = backend.export(model, request, tmp, progress)
        tokenizer = _copy_tokenizer(loaded, tmp)
        return {
            "backend": backend.name,
            "model": {"label": loaded.label, "source": loaded.checkpoint.source, "synthetic": loaded.synthetic,
                      "config": config.to_dict(), "parameters": config.parameter_counts()},
            "quantization": result.stored_scheme.to_dict(),
            "runtime": {"max_context": request.max_context, "vocab_size": config.vocab_size,
                        "bos_id": config.bos_id, "eos_ids": [config.eos_id], "tokenizer": tokenizer,
                        "kv_cache_bytes_per_value": result.kv_cache_bytes_per_value},
            "expected_weight_bytes": expected_weight_bytes(config, result.stored_scheme),
            "roles": dict(result.files),
            "details": dict(result.details),
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
