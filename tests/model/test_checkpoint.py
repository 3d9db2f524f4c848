"""Loading Hugging Face checkpoints, checked against `transformers`' own Llama implementation."""

import json
from pathlib import Path

import pytest
import torch

from mobilellm_export.errors import CheckpointError
from mobilellm_export.model.checkpoint import _read_safetensors, load_checkpoint
from mobilellm_export.model.reference import EagerRuntime
from mobilellm_export.runtimes.generate import generate


transformers = pytest.importorskip("transformers")

SHAPES = {
    "gqa-tied": dict(hidden_size=96, num_attention_heads=6, num_key_value_heads=2, head_dim=16, intermediate_size=160),
    "mqa-tied-wide-heads": dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=1, head_dim=32, intermediate_size=128),
    "mha-untied": dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=4, head_dim=16, intermediate_size=96,
                       tie_word_embeddings=False),
}


def _hf_llama(tmp_path: Path, shape: dict, *, seed: int = 0, **save_kwargs) -> tuple[object, Path]:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=300, num_hidden_layers=3, rms_norm_eps=1e-5, max_position_embeddings=128,
        initializer_range=0.25, **{"tie_word_embeddings": True, **shape},
    )
    model = transformers.LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = None  # generate exactly the requested number of tokens
    model.generation_config.pad_token_id = 0
    model.save_pretrained(tmp_path / "hf", **save_kwargs)
    return model, tmp_path / "hf"


@pytest.mark.parametrize("shape", SHAPES)
def test_transformers_llama_loads_with_equal_logits_and_greedy_tokens(tmp_path, shape):
    hf, directory = _hf_llama(tmp_path, SHAPES[shape])
    ours = load_checkpoint(directory).model
    assert ours.config.share_embedding == SHAPES[shape].get("tie_word_embeddings", True)
    ids = torch.randint(0, 300, (1, 48), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = hf(ids).logits
    assert (ours.logits(ids) - expected).abs().max() < 1e-4

    prompt = ids[:, :6]
    with torch.no_grad():
        hf_tokens = hf.generate(prompt, max_new_tokens=32, do_sample=False)[0, 6:].tolist()
    our_tokens = generate(EagerRuntime(ours), prompt[0].tolist(), max_new_tokens=32).new_ids
    assert len(hf_tokens) == 32 and len(set(hf_tokens)) >= 8, "the reference output is too degenerate to compare"
    assert our_tokens == hf_tokens


def test_sharded_safetensors_load(tmp_path):
    hf, directory = _hf_llama(tmp_path, SHAPES["gqa-tied"], max_shard_size="60KB")
    assert (directory / "model.safetensors.index.json").exists() and len(list(directory.glob("*.safetensors"))) > 2
    ids = torch.randint(0, 300, (1, 16))
    with torch.no_grad():
        assert (load_checkpoint(directory).model.logits(ids) - hf(ids).logits).abs().max() < 1e-4


def test_pytorch_model_bin_loads(tmp_path):
    # transformers 5 no longer writes .bin files; older releases wrote torch.save(state_dict()),
    # with the tied lm_head.weight stored next to the embedding, as MobileLLM's published .bin is.
    hf, directory = _hf_llama(tmp_path, SHAPES["gqa-tied"])
    (directory / "model.safetensors").unlink()
    torch.save(hf.state_dict(), directory / "pytorch_model.bin")
    assert "lm_head.weight" in hf.state_dict()
    ids = torch.randint(0, 300, (1, 16))
    with torch.no_grad():
        assert (load_checkpoint(directory).model.logits(ids) - hf(ids).logits).abs().max() < 1e-4


def test_mobilellm_ls_checkpoint_round_trips(ls_checkpoint):
    config = json.loads((ls_checkpoint / "config.json").read_text())
    assert config["architectures"] == ["MobileLLMForCausalLM"] and config["layer_sharing"] is True
    loaded = load_checkpoint(ls_checkpoint).model
    assert loaded.config.layer_sharing and len(loaded.caches) == 2 * len(loaded.layers)


# -- strictness ----------------------------------------------------------------------------------

def _rewrite_weights(directory: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(directory / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(directory / "model.safetensors"))


def test_missing_embedding_is_refused_naming_the_tensor(ls_checkpoint):
    # The known bad MobileLLM safetensors upload: embedding gone, only lm_head.weight left.
    def drop(t):
        t["lm_head.weight"] = t.pop("model.embed_tokens.weight")
    _rewrite_weights(ls_checkpoint, drop)
    with pytest.raises(CheckpointError, match="missing tensor 'model.embed_tokens.weight'.*known-bad"):
        load_checkpoint(ls_checkpoint)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.pop("model.layers.2.mlp.down_proj.weight"), "missing tensor 'model.layers.2.mlp.down_proj.weight'"),
    (lambda t: t.update({"model.layers.0.self_attn.k_proj.weight": torch.zeros(16, 64)}),
     r"tensor 'model.layers.0.self_attn.k_proj.weight' has shape \(16, 64\), config needs \(32, 64\)"),
    (lambda t: t.update({"model.layers.3.mlp.up_proj.weight": torch.zeros(96, 64)}), "unexpected tensor 'model.layers.3"),
    (lambda t: t.update({"lm_head.weight": torch.zeros(257, 64)}), "lm_head.weight differs"),
    (lambda t: t.update({"model.norm.weight": torch.zeros(64, dtype=torch.int32)}), "expected floating point"),
])
def test_incomplete_or_mismatched_checkpoints_are_refused(ls_checkpoint, edit, message):
    _rewrite_weights(ls_checkpoint, edit)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(ls_checkpoint)


def test_truncated_weights_file_is_refused(ls_checkpoint):
    path = ls_checkpoint / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(ls_checkpoint)


def test_safetensors_are_read_as_the_safetensors_library_reads_them(tmp_path):
    from safetensors.torch import load_file, save_file

    gen = torch.Generator().manual_seed(0)
    written = {
        "f32": torch.randn(3, 5, generator=gen), "bf16": torch.randn(4, 2, generator=gen).to(torch.bfloat16),
        "f16": torch.randn(7, generator=gen).half(), "i64": torch.arange(6).reshape(2, 3), "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4), "flags": torch.tensor([True, False, True]),
    }
    save_file(written, str(tmp_path / "w.safetensors"), metadata={"format": "pt"})
    ours, theirs = _read_safetensors(tmp_path / "w.safetensors"), load_file(str(tmp_path / "w.safetensors"))
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert ours[name].dtype == tensor.dtype and torch.equal(ours[name], tensor), name
    # A buffer each, so that dropping one tensor gives its memory back (see _read_safetensors).
    stored = [t.untyped_storage() for t in ours.values() if t.numel()]
    assert len({s.data_ptr() for s in stored}) == len(stored)
    assert all(s.nbytes() == t.numel() * t.element_size() for s, t in zip(stored, [t for t in ours.values() if t.numel()]))


@pytest.mark.parametrize("damage", [
    lambda b: b[:4],  # no header length
    lambda b: (10**12).to_bytes(8, "little") + b[8:],  # a header longer than the file
    lambda b: b[:8] + b"\xff" * 10 + b[18:],  # a header that is not JSON
    lambda b: b[: len(b) - 3],  # the last tensor cut short
])
def test_damaged_safetensors_are_one_clear_error(tmp_path, damage):
    from safetensors.torch import save_file

    save_file({"a": torch.ones(4, 4), "b": torch.ones(8)}, str(tmp_path / "w.safetensors"))
    path = tmp_path / "w.safetensors"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match="w.safetensors: corrupt or truncated safetensors file"):
        _read_safetensors(path)


def test_truncated_pytorch_bin_is_refused(ls_checkpoint):
    (ls_checkpoint / "model.safetensors").unlink()
    (ls_checkpoint / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not a whole zip")
    with pytest.raises(CheckpointError, match="pytorch_model.bin: corrupt or truncated"):
        load_checkpoint(ls_checkpoint)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(architectures=["GPT2LMHeadModel"]), "unsupported architecture 'GPT2LMHeadModel'"),
    (lambda c: c.pop("hidden_size"), "lacks required field 'hidden_size'"),
    (lambda c: c.update(num_key_value_heads=3), "invalid model: n_heads"),
    (lambda c: c.update(rope_scaling={"type": "linear", "factor": 2.0}), "rope scaling"),
    (lambda c: c.update(hidden_act="gelu"), "hidden_act"),
])
def test_bad_configs_are_refused(ls_checkpoint, edit, message):
    path = ls_checkpoint / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(ls_checkpoint)


def test_invalid_json_and_missing_files_are_refused(ls_checkpoint, tmp_path):
    (ls_checkpoint / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(ls_checkpoint)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path / "empty")


def test_zero_attention_heads_is_one_checkpoint_error_not_a_division_by_zero():
    # Found by tests/test_fuzz.py: the default head_dim (hidden_size // heads) was computed first.
    from mobilellm_export.model.checkpoint import config_from_hf, config_to_hf

    from ..conftest import small_config

    data = {**config_to_hf(small_config()), "num_attention_heads": 0}
    data.pop("head_dim", None)
    with pytest.raises(CheckpointError, match="n_heads"):
        config_from_hf(data)
