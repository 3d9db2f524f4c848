import pytest

from mobilellm_export.errors import ConfigError
from mobilellm_export.model.config import PRESETS, MobileLLMConfig, get_preset
from mobilellm_export.model.modeling import MobileLLM

from ..conftest import small_config

# Published parameter counts of MobileLLM (shared embedding counted once).
PUBLISHED = {"125M": 124_635_456, "350M": 345_355_200, "600M": 603_188_352, "1B": 1_005_461_760, "1.5B": 1_511_188_800}


@pytest.mark.parametrize("name", PUBLISHED)
def test_preset_parameter_counts_match_the_published_models(name):
    assert get_preset(name).parameter_counts()["unique"] == PUBLISHED[name]


def test_presets_have_exact_names_and_published_shapes():
    assert set(PRESETS) == {"tiny", "125M", "350M", "600M", "1B", "1.5B", "125M-LS", "350M-LS"}
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
