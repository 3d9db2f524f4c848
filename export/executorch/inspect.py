"""What an ExecuTorch artifact's weights file holds, read back with ExecuTorch's own deserializer."""

from __future__ import annotations

from mobilellm_export.model.config import MobileLLMConfig
from mobilellm_export.runtimes.manifest import Manifest

from ..contract import StorageReport


def inspect_storage(manifest: Manifest) -> StorageReport:
    """Named entries of the .ptd, the buffers they point at, and which of the program's
    shared-matrix entries (the lookup's) share a buffer with XNNPACK's blobs."""
    from executorch.exir._serialize._cord import Cord
    from executorch.extension.flat_tensor.serialize.serialize import FlatTensorSerializer

    payload = FlatTensorSerializer().deserialize(Cord(manifest.path("data").read_bytes()))
    keys_by_buffer: dict[int, list[str]] = {}
    for key, entry in payload.named_data.items():
        keys_by_buffer.setdefault(entry.buffer_index, []).append(key)
    # The program's own names for the shared matrix: the lookup's buffers when quantized, the
    # one Parameter (first named under lm_head) when float.
    program_keys = [k for k in payload.named_data if k.startswith(("lookup.", "lm_head."))]
    shared = {k: tuple(other for other in keys_by_buffer[payload.named_data[k].buffer_index] if other != k)
              for k in program_keys}
    config = MobileLLMConfig.from_dict(manifest.model.config)
    context, head_dim = manifest.runtime.max_context, config.head_dim
    # Constants that are not weights: the RoPE tables, the small helper matrices (rotate-half,
    # the norms' averagers) and NoPE blocks' temperature table.
    overhead = 4 * (2 * context * head_dim + head_dim ** 2 + config.dim + (head_dim if config.qk_norm else 0)
                    + (context if config.temperature_tuned else 0))
    return StorageReport(stored_bytes=sum(len(bytes(b)) for b in payload.buffers), non_weight_bytes=overhead,
                         shared_matrix_once=bool(shared) and all(shared.values()), shared_matrix_readers=shared)
