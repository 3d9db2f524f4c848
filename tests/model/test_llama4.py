"""MobileLLM-R1 (Llama4-text) checkpoints, checked against transformers' own Llama4ForCausalLM."""

import json
from pathlib import Path

import pytest
import torch

from mobilellm_export.errors import CheckpointError
from mobilellm_export.model.checkpoint import load_checkpoint, save_checkpoint
from mobilellm_export.model.config import get_preset
from mobilellm_export.model.reference import EagerRuntime
from mobilellm_export.runtimes.generate import generate

transformers = pytest.importorskip("transformers")

BASE = dict(vocab_size=300, hidden_size=96, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
            head_dim=16, intermediate_size=160, intermediate_size_mlp=160, max_position_embeddings=128,
            rms_norm_eps=1e-5, initializer_range=0.25, tie_word_embeddings=True, moe_layers=[],
            num_local_experts=0, bos_token_id=1, eos_token_id=[2, 3, 4])

SWITCHES = {
    # R1's own: RoPE (theta 8e6, adjacent pairs) and the qk norm on every block, no temperature
    # tuning, chunks longer than any context.
    "r1": dict(rope_theta=8e6, use_qk_norm=True, no_rope_layers=[1, 1, 1], attn_temperature_tuning=False,
               attention_chunk_size=32768),
    # A NoPE block with temperature tuning; floor_scale 4 so the temperature moves within the test.
    "nope-temperature": dict(rope_theta=1e4, use_qk_norm=True, no_rope_layers=[1, 0, 1], attn_temperature_tuning=True,
                             attn_scale=0.5, floor_scale=4, attention_chunk_size=None),
    # Chunked attention on the RoPE blocks (transformers' default layer_types), chunks of 8 positions.
    "small-chunks": dict(rope_theta=1e4, use_qk_norm=False, no_rope_layers=[1, 0, 1], attn_temperature_tuning=False,
                         attention_chunk_size=8),
}


def hf_llama4(tmp_path: Path, switches: dict, seed: int = 0) -> tuple[object, Path]:
    torch.manual_seed(seed)
    config = transformers.Llama4TextConfig(**{**BASE, **switches})
    model = transformers.Llama4ForCausalLM(config).eval()
    model.generation_config.eos_token_id = None  # generate exactly the requested number of tokens
    model.generation_config.pad_token_id = 0
    model.save_pretrained(tmp_path / "hf")
    return model, tmp_path / "hf"


def _compare(hf, ours, length: int = 48) -> None:
    ids = torch.randint(0, 300, (1, length), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = hf(ids).logits
    assert (ours.logits(ids) - expected).abs().max() < 1e-4
    prompt = ids[:, :6]
    with torch.no_grad():
        hf_tokens = hf.generate(prompt, max_new_tokens=40, do_sample=False)[0, 6:].tolist()
    our_tokens = generate(EagerRuntime(ours), prompt[0].tolist(), max_new_tokens=40).new_ids
    assert len(set(hf_tokens)) >= 8, "the reference output is too degenerate to compare"
    assert our_tokens == hf_tokens


@pytest.mark.parametrize("name", SWITCHES)
def test_llama4_text_loads_with_equal_logits_and_greedy_tokens(tmp_path, name):
    hf, directory = hf_llama4(tmp_path, SWITCHES[name])
    ours = load_checkpoint(directory).model
    config = ours.config
    assert config.checkpoint_layout == "llama4_text" and config.share_embedding and config.eos_ids == (2, 3, 4)
    if name == "nope-temperature":
        assert config.nope_layers == (1,) and config.nope_attn_scale == 0.5 and config.nope_floor_scale == 4
    if name == "small-chunks":
        assert config.chunked_layers == (0, 2) and config.attention_chunk == 8 and config.nope_attn_scale == 0
    _compare(hf, ours)


def test_each_switch_changes_the_output(tmp_path):
    """The comparisons above would pass vacuously if a switch did nothing on these shapes."""
    ids = torch.randint(0, 300, (1, 48), generator=torch.Generator().manual_seed(5))
    outputs = {}
    for name in ("r1", "nope-temperature", "small-chunks"):
        hf, _ = hf_llama4(tmp_path / name, SWITCHES[name])
        with torch.no_grad():
            outputs[name] = hf(ids).logits
        plain = SWITCHES[name] | dict(use_qk_norm=False, attn_temperature_tuning=False, attention_chunk_size=None)
        hf_plain, _ = hf_llama4(tmp_path / f"{name}-plain", plain)
        with torch.no_grad():
            assert (hf_plain(ids).logits - outputs[name]).abs().max() > 1e-2, name


def test_saved_llama4_checkpoint_loads_in_transformers_with_equal_logits(tmp_path):
    hf, directory = hf_llama4(tmp_path, SWITCHES["nope-temperature"])
    ours = load_checkpoint(directory).model
    save_checkpoint(ours, tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert saved["architectures"] == ["Llama4ForCausalLM"] and saved["eos_token_id"] == [2, 3, 4]
    again = transformers.Llama4ForCausalLM.from_pretrained(tmp_path / "ours").eval()
    ids = torch.randint(0, 300, (1, 32))
    with torch.no_grad():
        assert (again(ids).logits - hf(ids).logits).abs().max() < 1e-5
    assert load_checkpoint(tmp_path / "ours").config == ours.config


def test_r1_presets_build_in_transformers_with_the_published_parameter_counts():
    """Our preset's shapes give transformers' module the parameter count the issue states; the
    config it writes builds that module without touching weights (meta device)."""
    from mobilellm_export.model.checkpoint import config_to_hf

    for name, count in {"R1-140M": 140_248_512, "R1-360M": 359_431_168, "R1-950M": 949_685_760}.items():
        config = get_preset(name)
        assert config.parameter_counts()["unique"] == count
        data = {k: v for k, v in config_to_hf(config).items() if k != "architectures"}
        with torch.device("meta"):
            module = transformers.Llama4ForCausalLM(transformers.Llama4TextConfig(**data))
        assert sum(p.numel() for p in module.parameters()) == count, name  # parameters() yields tied ones once


@pytest.mark.parametrize("edit, message", [
    (dict(moe_layers=None, interleave_moe_layer_step=1), "mixture-of-experts"),
    (dict(moe_layers=[1]), "mixture-of-experts"),
    (dict(layer_types=["full_attention", "sliding_attention", "full_attention"]), "sliding"),
    (dict(rope_scaling={"rope_type": "llama3", "factor": 8.0}), "rope scaling"),
    (dict(no_rope_layers=[1, 2, 1]), "no_rope_layers"),
    (dict(model_type="llama4"), "model_type"),
    (dict(eos_token_id=[2, "x"]), "eos_token_id"),
])
def test_unsupported_llama4_configs_are_refused_with_one_line(tmp_path, edit, message):
    _, directory = hf_llama4(tmp_path, SWITCHES["r1"])
    path = directory / "config.json"
    data = json.loads(path.read_text())
    data.update(edit)
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(directory)


def test_missing_no_rope_layers_follow_transformers_default(tmp_path):
    """transformers makes every fourth block NoPE when the key is absent; so do we."""
    switches = dict(SWITCHES["nope-temperature"], no_rope_layers=None)
    hf, directory = hf_llama4(tmp_path, dict(switches, num_hidden_layers=4))
    data = json.loads((directory / "config.json").read_text())
    data.pop("no_rope_layers", None)
    (directory / "config.json").write_text(json.dumps(data))
    ours = load_checkpoint(directory).model
    assert ours.config.nope_layers == (3,)
    ids = torch.randint(0, 300, (1, 24))
    with torch.no_grad():
        assert (ours.logits(ids) - hf(ids).logits).abs().max() < 1e-4
