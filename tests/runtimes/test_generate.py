import pytest
import torch

from mobilellm_export.errors import GenerationError
from mobilellm_export.model.reference import EagerRuntime
from mobilellm_export.runtimes.generate import Sampling, TextStream, generate, pick_token

from ..conftest import random_model, small_config


@pytest.fixture(scope="module")
def runtime():
    return EagerRuntime(random_model(small_config(layer_sharing=True)))


def test_greedy_generation_follows_the_argmax_of_full_recomputation(runtime):
    out = generate(runtime, [1, 5, 9], max_new_tokens=10)
    assert out.stop_reason == "max_new_tokens" and len(out.new_ids) == 10
    ids = [1, 5, 9]
    for token in out.new_ids:  # recompute every step from scratch, without the cache
        assert int(runtime.logits_all(ids)[-1].argmax()) == token
        ids.append(token)


def test_sampling_is_reproducible_from_its_seed_and_varies_without(runtime):
    sampling = Sampling(temperature=1.0, top_k=50, top_p=0.95, seed=7)
    a = generate(runtime, [1, 5], max_new_tokens=20, sampling=sampling).new_ids
    b = generate(runtime, [1, 5], max_new_tokens=20, sampling=sampling).new_ids
    c = generate(runtime, [1, 5], max_new_tokens=20, sampling=Sampling(temperature=1.0, top_k=50, seed=8)).new_ids
    assert a == b and a != c


def test_top_k_one_and_tiny_top_p_are_greedy():
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    gen = torch.Generator().manual_seed(0)
    for sampling in (Sampling(temperature=2.0, top_k=1), Sampling(temperature=2.0, top_p=1e-6)):
        assert all(pick_token(logits, sampling, gen) == 1 for _ in range(20))
    # top-k 2 never picks outside the two best
    assert {pick_token(logits, Sampling(temperature=5.0, top_k=2), gen) for _ in range(200)} == {1, 2}


def test_generation_stops_at_eos(runtime):
    first = generate(runtime, [1, 5, 9], max_new_tokens=5).new_ids
    out = generate(runtime, [1, 5, 9], max_new_tokens=5, eos_ids=(first[2],))
    assert out.stop_reason == "eos" and out.new_ids == first[:first.index(first[2]) + 1]


def test_generation_stops_at_the_context_limit():
    rt = EagerRuntime(random_model(small_config(max_seq_len=16)))
    out = generate(rt, list(range(1, 11)), max_new_tokens=50)
    assert out.stop_reason == "context" and len(out.prompt_ids) + len(out.new_ids) == 17  # last one not cached


@pytest.mark.parametrize("prompt, new, message", [
    (list(range(128)), 5, "prompt has 128 tokens but the context holds 128"),
    ([], 5, "empty"),
    ([1], 0, "max new tokens"),
])
def test_bad_requests_are_refused(runtime, prompt, new, message):
    with pytest.raises(GenerationError, match=message):
        generate(runtime, prompt, max_new_tokens=new)


def test_bad_sampling_settings_are_refused():
    for kwargs in ({"temperature": -1}, {"top_k": 0}, {"top_p": 1.5}):
        with pytest.raises(GenerationError):
            Sampling(**kwargs)


def test_text_stream_holds_back_incomplete_characters():
    pieces = []
    data = "é→".encode()
    stream = TextStream(lambda ids: bytes(ids).decode("utf-8", errors="replace"), pieces.append)
    for byte in data:
        stream(byte)
    assert "".join(pieces) == "é→" and "\ufffd" not in "".join(pieces)
