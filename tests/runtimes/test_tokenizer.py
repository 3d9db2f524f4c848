"""Tokenizers, checked against the C++ tokenizers ExecuTorch's LLM runner uses (pytorch_tokenizers)."""

from pathlib import Path

import pytest

from mobilellm_export.errors import TokenizerError
from mobilellm_export.model.sources import embedded_dir
from mobilellm_export.runtimes.tokenizer import HFTokenizer, SentencePieceTokenizer, load_tokenizer
from mobilellm_export.model.train import train_tokenizer

SAMPLES = [
    "Return the number of items in a container.",
    "def f(x):\n    return x ** 2  # square\n\n\tTabs and  double  spaces",
    "café ü → naïve résumé, 漢字 and emoji 🙂",
    " leading space and trailing newline\n",
]


@pytest.fixture(scope="module")
def cpp():
    return pytest.importorskip("pytorch_tokenizers")


@pytest.fixture(scope="module")
def trained_tokenizer_dir(tmp_path_factory) -> Path:
    from pydoc_data.topics import topics

    out = tmp_path_factory.mktemp("tok")
    train_tokenizer([topics[k] for k in sorted(topics)[:20]], 600, out)
    return out


@pytest.mark.parametrize("directory", ["trained", "embedded"])
def test_byte_level_bpe_matches_executorch_cpp_tokenizer(cpp, trained_tokenizer_dir, directory):
    directory = trained_tokenizer_dir if directory == "trained" else embedded_dir()
    ours = load_tokenizer(directory, bos_id=1, eos_ids=(2,))
    assert isinstance(ours, HFTokenizer)
    runner = cpp.CppHFTokenizer()
    runner.load(str(directory))  # the directory, so it reads bos/eos from tokenizer_config.json
    assert (runner.bos_tok(), runner.eos_tok()) == (ours.bos_id, ours.eos_id) == (1, 2)
    for text in SAMPLES:
        ids = ours.encode(text, bos=False)
        assert list(runner.encode(text, 0, 0)) == ids
        assert ours.decode(ids) == text
        if directory == embedded_dir():  # its post-processor lets the C++ runners add BOS too
            assert list(runner.encode(text, 1, 0)) == ours.encode(text) == [1, *ids]


def test_sentencepiece_model_matches_executorch_cpp_tokenizer(cpp, tmp_path):
    import sentencepiece as spm
    from pydoc_data.topics import topics

    text = "\n".join(topics[k] for k in sorted(topics)[:10])
    # Llama-2 layout: unk 0, bos 1, eos 2, byte fallback.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text.splitlines()), model_prefix=str(tmp_path / "tokenizer"), vocab_size=400,
        model_type="bpe", byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2,
    )
    ours = load_tokenizer(tmp_path, bos_id=1, eos_ids=(2,))
    assert isinstance(ours, SentencePieceTokenizer) and ours.vocab_size == 400
    runner = cpp.CppSPTokenizer()
    runner.load(str(tmp_path / "tokenizer.model"))
    for sample in SAMPLES[:3]:
        assert list(runner.encode(sample, 1, 0)) == ours.encode(sample)
    # SentencePiece's default normalisation collapses runs of spaces; plain text round-trips,
    # and characters outside its vocabulary come back through byte fallback.
    for sample in (SAMPLES[0], "café ü → 漢字"):
        assert ours.decode(ours.encode(sample)) == sample


def test_missing_and_broken_tokenizers_are_refused(tmp_path):
    with pytest.raises(TokenizerError, match="has no tokenizer"):
        load_tokenizer(tmp_path, bos_id=1, eos_ids=(2,))
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(TokenizerError, match="cannot read"):
        load_tokenizer(tmp_path, bos_id=1, eos_ids=(2,))
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "tokenizer.model").write_bytes(b"\x00garbage")
    with pytest.raises(TokenizerError, match="cannot read"):
        load_tokenizer(tmp_path, bos_id=1, eos_ids=(2,))


def test_special_ids_must_be_in_the_vocabulary(trained_tokenizer_dir):
    with pytest.raises(TokenizerError, match="eos_id 5000 is outside"):
        load_tokenizer(trained_tokenizer_dir, bos_id=1, eos_ids=(5000,))
