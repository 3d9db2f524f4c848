"""The model's own invariants: caching, layer sharing, embedding sharing."""

import pytest
import torch

from ..conftest import random_model, small_config


def _decode_all(model, ids, chunks):
    """Feed `ids` through the KV cache in the given chunk sizes; logits after each chunk."""
    model.reset_cache()
    out, pos = [], 0
    for n in chunks:
        out.append(model(ids[:, pos:pos + n], torch.tensor([pos])))
        pos += n
    return out


@pytest.mark.parametrize("layer_sharing", [False, True])
def test_cached_decoding_equals_full_recomputation(layer_sharing):
    model = random_model(small_config(layer_sharing=layer_sharing))
    ids = torch.randint(0, 257, (1, 40), generator=torch.Generator().manual_seed(1))
    full = model.logits(ids)  # no cache, positions 0..39
    with torch.no_grad():
        steps = _decode_all(model, ids, [13] + [1] * 27)
    expected = full[0, [12] + list(range(13, 40))]
    assert (torch.stack([s[0] for s in steps]) - expected).abs().max() < 1e-4


def test_ls_blocks_share_weights_but_each_run_has_its_own_cache_slot():
    model = random_model(small_config(layer_sharing=True))
    assert len(model.layers) == 3 and len(model.caches) == 6
    with torch.no_grad():
        model(torch.randint(0, 257, (1, 8)), torch.tensor([0]))
    first, second = model.caches[0].k_cache[:, :8], model.caches[1].k_cache[:, :8]
    # The second run of block 0 sees the first run's output, so its keys differ.
    assert first.abs().sum() > 0 and second.abs().sum() > 0 and not torch.allclose(first, second)


def test_a_slot_shared_by_both_runs_would_be_wrong():
    """Guards the reason for per-run slots: collapsing them (as the published remote code does)
    changes cached decoding, so the equality test above would catch such a regression."""
    model = random_model(small_config(layer_sharing=True))
    ids = torch.randint(0, 257, (1, 12), generator=torch.Generator().manual_seed(2))
    reference = model.logits(ids)[0, -1]
    for block in range(3):  # make both runs of each block use one cache module
        model.caches[2 * block + 1] = model.caches[2 * block]
    with torch.no_grad():
        steps = _decode_all(model, ids, [6] + [1] * 6)
    assert not torch.allclose(steps[-1][0], reference, atol=1e-3)


def test_shared_embedding_is_one_tensor():
    model = random_model(small_config())
    assert model.lm_head is None
    assert model.output_weight() is model.embed_tokens.weight
    assert "lm_head.weight" not in model.state_dict()
    untied = random_model(small_config(share_embedding=False))
    assert untied.output_weight() is untied.lm_head.weight


def test_prefill_positions_start_at_input_pos():
    """A continuation prefilled in one chunk at position p equals token-by-token decoding."""
    model = random_model(small_config(layer_sharing=True))
    ids = torch.randint(0, 257, (1, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        chunked = _decode_all(model, ids, [5, 15])[-1]
        stepped = _decode_all(model, ids, [5] + [1] * 15)[-1]
    assert (chunked - stepped).abs().max() < 1e-4
