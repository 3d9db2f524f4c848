"""What an ONNX artifact stores: its initializers, and which nodes read the shared matrix."""

from __future__ import annotations

from typing import Any

from mobilellm_export.runtimes.manifest import Manifest

from ..contract import StorageReport


def tensor_bytes(tensor: Any) -> int:
    """Stored bytes of an initializer (inline or external)."""
    from onnx import numpy_helper

    if tensor.raw_data:
        return len(tensor.raw_data)
    if tensor.data_location == 1:  # external
        return int({e.key: e.value for e in tensor.external_data}.get("length", 0))
    return numpy_helper.to_array(tensor).nbytes


def inspect_storage(manifest: Manifest) -> StorageReport:
    import onnx

    proto = onnx.load(str(manifest.path("model")))
    consumers: dict[str, list[str]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.name)
    sizes = {t.name: tensor_bytes(t) for t in proto.graph.initializer}
    shared_name = "embed_tokens" if "embed_tokens" in sizes else "embed_tokens_Q"
    readers = consumers.get(shared_name, [])
    # Followed through the Reshape in front of the quantized output projection.
    if "lm_head/Reshape" in readers:
        readers = [r for r in readers if r != "lm_head/Reshape"] + consumers.get("lm_head/Reshape/out0", [])
    # Position tables and the qk norm's unit scales: constants, not weights.
    rope = sum(sizes.get(n, 0) for n in ("rope_cos", "rope_sin", "q_temperature", "qk_norm_scale"))
    small = sum(v for k, v in sizes.items() if v <= 64 and not k.startswith("layers."))
    # Once: exactly the lookup and the output projection read the one initializer.
    return StorageReport(stored_bytes=sum(sizes.values()), non_weight_bytes=rope + small,
                         shared_matrix_once="embed/Gather" in readers and len(readers) == 2,
                         shared_matrix_readers={shared_name: tuple(readers)})
