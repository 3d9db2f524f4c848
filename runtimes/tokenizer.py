"""Tokenizers: SentencePiece `tokenizer.model` (MobileLLM ships Llama-2's) and HF `tokenizer.json`.

Both sit behind one small interface. Begin/end-of-sequence ids come from the model's config (they
are what the model was trained with); the tokenizer file only has to contain them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from mobilellm_export.errors import TokenizerError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
# Files that travel with a tokenizer into artifacts and app bundles: tokenizer_config.json names
# bos/eos for the C++ runners and holds the chat template (with R1's default system prompt);
# newer checkpoints keep the template in chat_template.jinja instead.
TOKENIZER_COMPANIONS = ("tokenizer_config.json", "chat_template.jinja")


class Tokenizer(Protocol):
    path: Path  # the file an artifact ships
    bos_id: int
    eos_ids: tuple[int, ...]  # every token that ends generation, the primary one first

    @property
    def eos_id(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str, *, bos: bool = True) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class HFTokenizer:
    """A Hugging Face `tokenizers` tokenizer.json."""

    def __init__(self, path: Path, bos_id: int, eos_ids: tuple[int, ...]) -> None:
        from tokenizers import Tokenizer as _Tokenizer

        try:
            self._tok = _Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for every parse failure
            raise TokenizerError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
        self.path, self.bos_id, self.eos_ids = path, bos_id, tuple(eos_ids)
        _check_ids(self)

    @property
    def eos_id(self) -> int:
        return self.eos_ids[0]

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, bos: bool = True) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return [self.bos_id, *ids] if bos else ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)


class SentencePieceTokenizer:
    """A SentencePiece model file (Llama-2 style, as MobileLLM uses)."""

    def __init__(self, path: Path, bos_id: int, eos_ids: tuple[int, ...]) -> None:
        import sentencepiece as spm

        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.Load(str(path))
        except (OSError, RuntimeError) as exc:
            raise TokenizerError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
        self.path, self.bos_id, self.eos_ids = path, bos_id, tuple(eos_ids)
        _check_ids(self)

    @property
    def eos_id(self) -> int:
        return self.eos_ids[0]

    @property
    def vocab_size(self) -> int:
        return self._sp.GetPieceSize()

    def encode(self, text: str, *, bos: bool = True) -> list[int]:
        ids = self._sp.EncodeAsIds(text)
        return [self.bos_id, *ids] if bos else ids

    def decode(self, ids: list[int]) -> str:
        return self._sp.DecodeIds([i for i in ids if i != self.bos_id and i not in self.eos_ids])


def _check_ids(tok: "HFTokenizer | SentencePieceTokenizer") -> None:
    for name, value in (("bos_id", tok.bos_id), *(("eos_id", e) for e in tok.eos_ids)):
        if not 0 <= value < tok.vocab_size:
            raise TokenizerError(f"{tok.path.name}: {name} {value} is outside its vocabulary of {tok.vocab_size}")


def find_tokenizer_file(directory: Path) -> Path | None:
    for name in TOKENIZER_FILES:
        if (directory / name).is_file():
            return directory / name
    return None


def load_tokenizer(path: Path, *, bos_id: int, eos_ids: tuple[int, ...]) -> Tokenizer:
    """Load `path` (a tokenizer file, or a directory holding tokenizer.json or tokenizer.model)."""
    path = Path(path)
    if path.is_dir():
        found = find_tokenizer_file(path)
        if found is None:
            raise TokenizerError(f"{path} has no tokenizer ({' or '.join(TOKENIZER_FILES)})")
        path = found
    if not path.is_file():
        raise TokenizerError(f"tokenizer file {path} does not exist")
    if path.suffix == ".json":
        return HFTokenizer(path, bos_id, eos_ids)
    if path.suffix == ".model":
        return SentencePieceTokenizer(path, bos_id, eos_ids)
    raise TokenizerError(f"unknown tokenizer file type {path.name!r}; expected {' or '.join(TOKENIZER_FILES)}")
