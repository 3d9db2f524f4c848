"""What `--model M` names, resolved exactly (never by guessing from file names).

    (none)              the embedded default model (the `tiny` preset, trained in this repo)
    125M, 350M-LS, ...  a preset: an architecture only (enough for `info`; it has no weights)
    synthetic:125M      a preset with seeded random weights, for size/speed work (no tokenizer)
    ./some/dir          a local Hugging Face checkpoint directory
    org/name            a Hugging Face hub id, downloaded with huggingface_hub
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mobilellm_export.errors import CheckpointError
from mobilellm_export.progress import Progress
from mobilellm_export.runtimes.tokenizer import Tokenizer, find_tokenizer_file, load_tokenizer

from .checkpoint import Checkpoint, download, load_checkpoint, looks_like_hub_id, read_config
from .config import HUB_IDS, PRESETS, MobileLLMConfig, get_preset
from .modeling import MobileLLM

SYNTHETIC_PREFIX = "synthetic:"
EMBEDDED = "embedded"  # the source recorded for the embedded model
SYNTHETIC_SEED = 0


def embedded_dir() -> Path:
    """The committed default model: package data of `mobilellm_export` (see pyproject.toml)."""
    import mobilellm_export

    return Path(mobilellm_export.__file__).parent / "assets" / "tiny"


@dataclass(frozen=True)
class LoadedModel:
    checkpoint: Checkpoint
    tokenizer: Tokenizer | None
    label: str  # how reports name it

    @property
    def synthetic(self) -> bool:
        return self.checkpoint.synthetic

    @property
    def model(self) -> MobileLLM:
        return self.checkpoint.model

    @property
    def config(self) -> MobileLLMConfig:
        return self.checkpoint.config

    def require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise CheckpointError(f"{self.label} has no tokenizer (tokenizer.json or tokenizer.model)")
        return self.tokenizer


def describe(spec: str | None) -> tuple[MobileLLMConfig, str]:
    """The architecture `spec` names, without loading weights (for `info`)."""
    if spec is None:
        return read_config(embedded_dir()), "embedded tiny model"
    if spec in PRESETS:
        return get_preset(spec), f"preset {spec}"
    if spec.startswith(SYNTHETIC_PREFIX):
        name = spec[len(SYNTHETIC_PREFIX):]
        return get_preset(name), f"synthetic {name}"
    return read_config(_directory(spec, config_only=True)), spec


def load_model(spec: str | None, *, max_context: int | None = None, progress: Progress | None = None) -> LoadedModel:
    progress = progress or Progress(quiet=True)
    if spec in PRESETS:
        hint = f"--model {HUB_IDS[spec]} (download) or " if spec in HUB_IDS else ""
        raise CheckpointError(
            f"preset {spec!r} is an architecture without weights; use {hint}--model {SYNTHETIC_PREFIX}{spec} (random weights)"
        )
    if spec is not None and spec.startswith(SYNTHETIC_PREFIX):
        name = spec[len(SYNTHETIC_PREFIX):]
        config = get_preset(name)
        progress.step(f"building {name} with random weights (seed {SYNTHETIC_SEED})")
        model = MobileLLM(config, max_context=max_context).init_weights(SYNTHETIC_SEED).eval()
        checkpoint = Checkpoint(model=model, config=config, directory=None, source=spec, synthetic=True)
        return LoadedModel(checkpoint, None, f"synthetic {name} (random weights)")
    directory = embedded_dir() if spec is None else _directory(spec, config_only=False)
    label = "embedded tiny model" if spec is None else spec
    progress.step(f"loading {label}")
    # The source is recorded in manifests as a spec that loads the same weights again from any
    # working directory: local directories by their absolute path, hub ids as they are.
    if spec is None:
        source = EMBEDDED
    elif Path(spec).exists():
        source = str(Path(spec).resolve())
    else:
        source = spec
    checkpoint = load_checkpoint(directory, source=source, max_context=max_context)
    tokenizer = None
    if find_tokenizer_file(directory) is not None:
        tokenizer = load_tokenizer(directory, bos_id=checkpoint.config.bos_id, eos_ids=checkpoint.config.eos_ids)
    if checkpoint.synthetic:
        label += " (random weights)"
    return LoadedModel(checkpoint, tokenizer, label)


def _directory(spec: str, *, config_only: bool) -> Path:
    path = Path(spec)
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{spec} is a file; --model takes a checkpoint directory")
        return path
    first = Path(spec.split("/", 1)[0])
    if spec.startswith((".", "/", "~")) or ("/" in spec and first.is_dir()):
        raise CheckpointError(f"checkpoint directory {spec} does not exist" + (
            f" ({first}/ exists here, so this is read as a local path, not a Hugging Face id)" if first.is_dir() else ""))
    if looks_like_hub_id(spec):
        return download(spec, config_only=config_only)
    raise CheckpointError(
        f"--model {spec!r} is neither a directory, a preset ({', '.join(PRESETS)}), "
        f"{SYNTHETIC_PREFIX}<preset>, nor a Hugging Face id (org/name)"
    )
