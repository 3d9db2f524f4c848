"""The committed default model: loads exactly, is small, and is clearly better than unigram."""

import json
import re

import pytest

from mobilellm_export.model import corpus
from mobilellm_export.model.checkpoint import read_config
from mobilellm_export.model.config import get_preset
from mobilellm_export.model.heldout import heldout_windows, oracle_unigram_perplexity
from mobilellm_export.runtimes.scoring import score
from mobilellm_export.model.sources import embedded_dir, load_model
from mobilellm_export.model.reference import EagerRuntime
from mobilellm_export.runtimes.generate import generate


@pytest.fixture(scope="module")
def embedded():
    return load_model(None)


@pytest.fixture(scope="module")
def record():
    return json.loads((embedded_dir() / "train_record.json").read_text())


def test_embedded_model_is_the_tiny_preset_and_small(embedded):
    assert read_config(embedded_dir()) == get_preset("tiny") == embedded.config
    assert embedded.config.layer_sharing and embedded.config.share_embedding
    assert 2_000_000 < embedded.config.parameter_counts()["unique"] < 10_000_000
    assert sum(p.stat().st_size for p in embedded_dir().iterdir()) <= 10_000_000


def test_heldout_perplexity_is_far_below_the_best_unigram_model(embedded):
    windows = heldout_windows(embedded.require_tokenizer(), window=256, max_tokens=8192)
    ppl = score(EagerRuntime(embedded.model), windows).perplexity
    unigram = oracle_unigram_perplexity([t for w in windows for t in w[1:]])
    assert ppl < 0.2 * unigram, (ppl, unigram)


@pytest.mark.slow
def test_recorded_heldout_figures_are_reproduced(embedded, record):
    """README quotes train_record.json; recompute its perplexity on the whole held-out split."""
    windows = heldout_windows(embedded.require_tokenizer(), window=record["heldout"]["window"])
    scores = score(EagerRuntime(embedded.model), windows)
    assert len(scores.nll) == record["heldout"]["scored_tokens"]
    assert scores.perplexity == pytest.approx(record["heldout"]["perplexity"], rel=1e-3)
    assert oracle_unigram_perplexity([t for w in windows for t in w[1:]]) == pytest.approx(
        record["heldout"]["oracle_unigram_perplexity"], rel=1e-6)


def test_generations_are_english_like(embedded):
    tok = embedded.require_tokenizer()
    english = set(re.findall(r"[a-z]+", " ".join(d.text.lower() for d in corpus.read_jsonl(embedded_dir() / "heldout.jsonl"))))
    words = []
    for prompt in ("Return the number of", "The default value is", "This module provides"):
        out = generate(EagerRuntime(embedded.model), tok.encode(prompt), max_new_tokens=40, eos_ids=(tok.eos_id,))
        words += re.findall(r"[a-z]+", tok.decode(out.new_ids).lower())
    known = sum(w in english for w in words) / len(words)
    assert len(words) >= 20 and known >= 0.9 and len(set(words)) >= 12, (known, words)


def test_committed_heldout_split_follows_the_split_rule(record):
    docs = corpus.read_jsonl(embedded_dir() / "heldout.jsonl")
    assert len(docs) == record["corpus"]["heldout_documents"] and all(d.heldout for d in docs)
    rebuilt = corpus.build_corpus()
    if corpus.corpus_digest(rebuilt) != record["corpus"]["sha256"]:
        pytest.skip("this Python's standard library differs from the one the model was trained on")
    assert corpus.split(rebuilt)[1] == docs
