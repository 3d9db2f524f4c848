"""Property-based fuzzing (hypothesis) of what the tool parses from users' disks: config.json,
artifact manifests, app bundle manifests and safetensors headers. The property: whatever the
bytes, the reader either accepts them or raises the one error type its command turns into one
line; never a KeyError, TypeError, IndexError or an allocation of what a header claims."""

from __future__ import annotations

import copy
import json
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mobilellm_export.errors import CheckpointError, UnsupportedError
from mobilellm_export.model.checkpoint import config_from_hf, config_to_hf, read_weights
from mobilellm_export.runtimes.manifest import ArtifactError, read_manifest

from .conftest import cli_export, small_config

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def mutate(data: object, path: list[object], value: object) -> object:
    """`data` with the value at `path` (keys / indices, taken modulo what exists) replaced."""
    if not path or not isinstance(data, (dict, list)) or not data:
        return value
    out = copy.copy(data)
    if isinstance(out, dict):
        key = sorted(out)[hash(str(path[0])) % len(out)] if not (isinstance(path[0], str) and path[0] in out) else path[0]
    else:
        key = int(path[0]) % len(out) if isinstance(path[0], int) else 0
    out[key] = mutate(out[key], path[1:], value)
    return out


paths = st.lists(st.one_of(st.integers(0, 50), st.text(max_size=6)), min_size=1, max_size=4)


# Every key config_from_hf reads, so that fuzzing also adds the ones a written config lacks.
CONFIG_KEYS = ["architectures", "attention_bias", "bos_token_id", "eos_token_id", "head_dim", "hidden_act",
               "hidden_size", "intermediate_size", "layer_sharing", "max_position_embeddings", "mlp_bias",
               "num_attention_heads", "num_hidden_layers", "num_key_value_heads", "rms_norm_eps", "rope_parameters",
               "rope_scaling", "rope_theta", "share_embedding", "tie_word_embeddings", "vocab_size", "model_type"]


@settings(FUZZ, max_examples=400)
@given(path=paths, value=json_values, drop=st.booleans(),
       extra=st.dictionaries(st.sampled_from(CONFIG_KEYS), json_values, min_size=1, max_size=3))
def test_config_json_is_accepted_or_one_checkpoint_error(path, value, drop, extra):
    base = {**config_to_hf(small_config()), **extra}
    data = mutate(base, path, value)
    if drop and isinstance(data, dict) and data:
        data.pop(sorted(data)[len(path) % len(data)])
    try:
        config_from_hf(data)
    except CheckpointError:
        pass


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return cli_export(tmp_path_factory.mktemp("fuzz"), "onnx", "--quant", "fp32", "--max-context", "64")


@FUZZ
@given(path=paths, value=json_values)
def test_manifests_are_accepted_or_one_artifact_error(artifact, path, value):
    original = json.loads((artifact / "manifest.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        copy_dir = Path(tmp) / "a"
        copy_dir.mkdir()
        (copy_dir / "manifest.json").write_text(json.dumps(mutate(original, path, value)))
        try:
            manifest = read_manifest(copy_dir)
        except ArtifactError:
            return
        # Accepted: what the commands read next is there and typed.
        assert manifest.runtime.eos_ids and all(isinstance(e, int) for e in manifest.runtime.eos_ids)
        assert isinstance(manifest.quantization["name"], str) and manifest.narrowest_bits in (4, 8, 16, 32)
        for name in manifest.files:
            assert (copy_dir / name).resolve().is_relative_to(copy_dir.resolve())


@FUZZ
@given(data=st.dictionaries(st.sampled_from(["schema_version", "model_name", "backend", "scheme", "context_length",
                                             "bos_id", "eos_ids", "generation", "files", "integrity", "total_bytes",
                                             "extra"]), json_values))
def test_bundle_manifests_validate_or_one_error(data):
    from mobilellm_export.bundle import validate

    try:
        validate(data)
    except UnsupportedError:
        pass


@FUZZ
@given(header=st.dictionaries(st.text(max_size=10), st.fixed_dictionaries({
    "dtype": st.sampled_from(["F32", "F16", "BF16", "I8", "U8", "F64", "X"]) | json_values,
    "shape": st.lists(st.integers(-3, 2**40), max_size=3) | json_values,
    "data_offsets": st.lists(st.integers(-3, 2**40), min_size=0, max_size=3) | json_values,
}), max_size=3), payload=st.binary(max_size=64), lie=st.integers(-8, 2**20))
def test_safetensors_headers_are_read_or_one_checkpoint_error(header, payload, lie):
    raw = json.dumps(header).encode()
    length = len(raw) + (lie if lie % 3 == 0 else 0)  # sometimes a header length that lies
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.safetensors").write_bytes(struct.pack("<Q", max(length, 0)) + raw + payload)
        try:
            read_weights(Path(tmp))
        except CheckpointError:
            pass
