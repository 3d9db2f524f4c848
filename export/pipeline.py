"""One export: a loaded model and a planned export in, a complete artifact directory out."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import torch

from mobilellm_export.errors import UnsupportedError
from mobilellm_export.model.modeling import MobileLLM, replace_parameter
from mobilellm_export.model.sources import LoadedModel
from mobilellm_export.progress import Progress
from mobilellm_export.quant.calibration import Calibration, calibration
from mobilellm_export.quant.schemes import AUTO, QuantScheme, expected_weight_bytes, resolve_method
from mobilellm_export.quant.stage import QuantizedModel, quantize
from mobilellm_export.runtimes.tokenizer import TOKENIZER_COMPANIONS, TOKENIZER_FILES

from .contract import Backend, ExportRequest
from .writer import write_artifact


class Quantizer:
    """The quantization stage for one loaded model: codes computed once per scheme and method,
    whichever backends serialize them."""

    def __init__(self, loaded: LoadedModel, progress: Progress, *, calibration_file: Path | None = None) -> None:
        self.loaded, self.progress, self.calibration_file = loaded, progress, calibration_file
        self._done: dict[tuple[QuantScheme, str], QuantizedModel] = {}
        self._calibration: Calibration | None = None

    def calibration(self) -> Calibration:
        if self._calibration is None:
            tokenizer = self.loaded.tokenizer
            if tokenizer is None:
                raise UnsupportedError(f"{self.loaded.label} has no tokenizer, so calibration text cannot be "
                                       "tokenized; use --method rtn or mse")
            self._calibration = calibration(tokenizer, text_file=self.calibration_file)
            self.progress.step(f"calibration: {self._calibration.tokens} tokens of {self._calibration.source}")
        return self._calibration

    @property
    def has_text(self) -> bool:
        return self.calibration_file is not None or self.loaded.tokenizer is not None

    def __call__(self, scheme: QuantScheme, method: str) -> QuantizedModel:
        chosen = resolve_method(method, scheme, has_text=self.has_text)
        key = (scheme, chosen)
        if key not in self._done:
            why = ""
            if method == AUTO:  # auto falls back to rtn only for want of text
                why = " (auto)" if self.has_text or scheme.linear.is_float else (
                    " (auto: gptq needs calibration text and the model has no tokenizer; pass --calibration FILE)")
            self.progress.step(f"quantizing ({chosen}{why}): linear {scheme.linear.describe()}, "
                               f"shared matrix {scheme.embedding.describe()}")
            needs_text = chosen == "gptq" and not scheme.linear.is_float
            self._done[key] = quantize(self.loaded.model, scheme, chosen, progress=self.progress,
                                       calibration=self.calibration() if needs_text else None)
        return self._done[key]


def export_artifact(loaded: LoadedModel, backend: Backend, request: ExportRequest, target: Path, *,
                    overwrite: bool = False, progress: Progress | None = None,
                    quantizer: Quantizer | None = None) -> dict[str, Any]:
    progress = progress or Progress(quiet=True)
    if request.scheme.name not in backend.schemes:
        raise UnsupportedError(f"the {backend.name} backend has no {request.scheme.name!r} scheme; "
                               f"use {', '.join(backend.schemes)}")
    backend.require()
    config = loaded.config
    if config.chunk_limits_context(request.max_context):
        # No backend builds the chunk mask (ExecuTorch's custom_sdpa and onnxruntime's
        # GroupQueryAttention are causal only): refuse rather than export plain causal attention.
        raise UnsupportedError(f"this model attends within chunks of {config.attention_chunk} positions; exported "
                               f"artifacts attend causally over the whole context, so use --max-context "
                               f"{config.attention_chunk} or less")
    quantized = (quantizer or Quantizer(loaded, progress))(request.scheme, request.method)

    def build(tmp: Path) -> dict[str, Any]:
        model = _working_copy(loaded.model)
        result = backend.export(model, quantized, request, tmp, progress)
        tokenizer = _copy_tokenizer(loaded, tmp)
        return {
            "backend": backend.name,
            "model": {"label": loaded.label, "source": loaded.checkpoint.source, "synthetic": loaded.synthetic,
                      "config": config.to_dict(), "parameters": config.parameter_counts()},
            # As the files hold it (container widths, block layout), and what the stage computed.
            "quantization": {**result.stored_scheme.to_dict(),
                             "stage": {**quantized.scheme.to_dict(), **quantized.record,
                                       "requested_method": request.method}},
            "runtime": {"max_context": request.max_context, "vocab_size": config.vocab_size,
                        "bos_id": config.bos_id, "eos_ids": list(config.eos_ids), "tokenizer": tokenizer,
                        "kv_cache_bytes_per_value": result.kv_cache_bytes_per_value},
            "expected_weight_bytes": expected_weight_bytes(config, result.stored_scheme),
            "roles": dict(result.files),
            "details": dict(result.details),
        }

    progress.step(f"exporting {loaded.label} to {backend.name} {request.scheme.name} -> {target}")
    return write_artifact(target, build, overwrite=overwrite)


def free_replaced_floats(loaded: LoadedModel, quantized: list[QuantizedModel]) -> int:
    """Free the float value of every linear matrix that each of `quantized` replaced by codes, for a
    run whose remaining exports all come from those codes (no backend with `reads_replaced_floats`,
    no check against the float model afterwards). Returns the bytes freed.

    A 125M model's linears are 0.43 GB of float32 that lowering would otherwise carry through its
    own peak, and its shared matrix another 74 MB. The parameters stay, on the meta device, so that
    anything still reading one fails loudly instead of computing with stale numbers. The shared
    matrix is freed only when every scheme of the run quantized it: it is both the token lookup
    and the output projection, and these backends build both from its codes.
    """
    if not quantized:
        return 0
    names = set.intersection(*(set(q.weights) for q in quantized))
    freed = 0
    for name in sorted(names):
        old = loaded.model.get_parameter(name)
        if old.is_meta:
            continue
        freed += old.numel() * old.element_size()
        empty = torch.nn.Parameter(torch.empty_like(old, device="meta"), requires_grad=False)
        replace_parameter(loaded.model, name, empty)
    return freed


def _working_copy(model: MobileLLM) -> MobileLLM:
    """The module tree a backend may change (swap modules, replace a Parameter or its `.data`, as
    `Module.to` does), over the same weight storage: a full deep copy held a second float32 model
    through lowering, a quarter of a 125M export's peak memory. No backend writes into a weight
    in place; tests/export/test_pipeline.py holds every backend to that."""
    memo: dict[int, Any] = {id(p): torch.nn.Parameter(p.detach(), requires_grad=p.requires_grad)
                            for p in model.parameters()}
    return copy.deepcopy(model, memo)


def _copy_tokenizer(loaded: LoadedModel, out: Path) -> str | None:
    tokenizer = loaded.tokenizer
    if tokenizer is None:
        return None
    shutil.copy2(tokenizer.path, out / tokenizer.path.name)
    for name in TOKENIZER_COMPANIONS:
        companion = tokenizer.path.parent / name
        if companion.is_file():
            shutil.copy2(companion, out / name)
    assert tokenizer.path.name in TOKENIZER_FILES
    return tokenizer.path.name
