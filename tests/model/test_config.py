import pytest

from mobilellm_export.errors import ConfigError
from mobilellm_export.model.config import PRESETS, MobileLLMConfig, get_preset
from mobilellm_export.model.modeling import MobileLLM

from ..conftest import small_config

# Published parameter counts of MobileLLM (shared embedding counted once).
PUBLISHED = {"125M": 124_635_456, "350M": 345_355_200, "600M": 603_188_352, "1B": 1_005_461_760, "1.5B": 1_511_188_800,
             "R1-140M": 140_248_512, "R1-360M": 359_431_168, "R1-950M": 949_685_760}


@pytest.mark.parametrize("name", PUBLISHED)
def test_preset_parameter_counts_match_the_published_models(name):
    assert get_preset(name).parameter_counts()["unique"] == PUBLISHED[name]


def test_presets_have_exact_names_and_published_shapes():
    assert set(PRESETS) == {"tiny", "125M", "350M", "600M", "1B", "1.5B", "125M-LS", "350M-LS",
                            "R1-140M", "R1-360M", "R1-950M"}
    c = get_preset("125M")
    assert (c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.ffn_dim, c.head_dim, c.vocab_size) == (30, 576, 9, 3, 1536, 64, 32000)
    assert (c.rope_theta, c.norm_eps, c.share_embedding, c.layer_sharing) == (1e4, 1e-5, True, False)
    ls = get_preset("125M-LS")
    assert ls.layer_sharing and ls.replace(layer_sharing=False) == c
    assert ls.parameter_counts()["unique"] == PUBLISHED["125M"]
    assert ls.n_executed_layers == 60 and ls.execution_order[:4] == (0, 0, 1, 1)


@pytest.mark.parametrize("name", ["125m", "125M ", "MobileLLM-125M", "125M-ls", ""])
def test_preset_lookup_is_exact(name):
    with pytest.raises(ConfigError, match="unknown preset"):
        get_preset(name)


@pytest.mark.parametrize("changes", [{"layer_sharing": True}, {"share_embedding": False}, {"n_kv_heads": 4}])
def test_counts_from_shapes_equal_the_module(changes):
    config = small_config(**changes)
    model = MobileLLM(config)
    counts = config.parameter_counts()
    assert counts["unique"] == sum(p.numel() for p in model.parameters())
    per_block = sum(p.numel() for p in model.layers[0].parameters())
    assert counts["executed"] == counts["unique"] + per_block * (config.n_executed_layers - config.n_layers)


@pytest.mark.parametrize("changes, message", [
    ({"n_kv_heads": 3}, "multiple of n_kv_heads"),
    ({"dim": 0}, "positive integer"),
    ({"head_dim": 15}, "even"),
    ({"eos_id": 999}, "outside the vocabulary"),
])
def test_invalid_configs_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        small_config(**changes)


def test_from_dict_refuses_unknown_and_missing_fields():
    data = small_config().to_dict()
    assert MobileLLMConfig.from_dict(data) == small_config()
    with pytest.raises(ConfigError, match="unknown config field"):
        MobileLLMConfig.from_dict({**data, "n_layer": 3})
    del data["dim"]
    with pytest.raises(ConfigError, match="incomplete"):
        MobileLLMConfig.from_dict(data)


def test_context_beyond_the_model_maximum_is_refused():
    with pytest.raises(ConfigError, match="outside 2..128"):
        MobileLLM(small_config(), max_context=129)
    assert MobileLLM(small_config(), max_context=16).caches[0].k_cache.shape[1] == 16
    assert MobileLLM(small_config()).rope_cos.shape == (128, 16)


def test_r1_presets_carry_llama4_text_attention_and_three_stop_tokens():
    r1 = get_preset("R1-950M")
    assert (r1.n_layers, r1.dim, r1.n_heads, r1.n_kv_heads, r1.ffn_dim, r1.vocab_size) == (22, 1536, 24, 6, 6144, 128256)
    assert r1.checkpoint_layout == "llama4_text" and r1.qk_norm and not r1.nope_layers and r1.rope_theta == 8e6
    assert r1.eos_ids == (128001, 128008, 128009) and r1.bos_id == 128000
    assert not r1.chunk_limits_context(32768) and r1.chunk_limits_context(32769)


@pytest.mark.parametrize("changes, message", [
    ({"qk_norm": True}, "Llama4-text"),
    ({"nope_layers": (1,)}, "Llama4-text"),
    ({"checkpoint_layout": "llama4_text", "nope_layers": (3,)}, "distinct block indices"),
    ({"checkpoint_layout": "llama4_text", "chunked_layers": (0,)}, "attention_chunk"),
    ({"checkpoint_layout": "llama4_text", "layer_sharing": True}, "layer sharing"),
    ({"checkpoint_layout": "gguf"}, "checkpoint_layout"),
    ({"extra_eos_ids": (999,)}, "outside the vocabulary"),
    ({"extra_eos_ids": "3"}, "list of integers"),
])
def test_llama4_fields_are_validated(changes, message):
    with pytest.raises(ConfigError, match=message):
        small_config(**changes)


def test_list_fields_round_trip_through_json_as_lists():
    config = small_config(checkpoint_layout="llama4_text", nope_layers=[1], extra_eos_ids=[3, 4])
    assert config.nope_layers == (1,) and config.eos_ids == (2, 3, 4)
    data = config.to_dict()
    assert data["nope_layers"] == [1] and MobileLLMConfig.from_dict(data) == config
