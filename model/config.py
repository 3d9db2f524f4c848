"""MobileLLM architecture configuration and the table of published presets.

A config is a frozen dataclass: it describes an architecture, never a file. Presets are looked up
by their exact name ("125M", "350M-LS", "tiny"); nothing is inferred from directory or file names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, get_args

from mobilellm_export.errors import ConfigError

# How a checkpoint lays out its weights. "llama": Hugging Face Llama names (`mlp.*`) and q/k rows
# in the rotate-half order (MobileLLM, Llama). "llama4_text": `feed_forward.*` names and q/k rows
# whose rotary pairs are adjacent (MobileLLM-R1). The model computes in one form; loading and
# saving translate (see checkpoint.py).
CheckpointLayout = Literal["llama", "llama4_text"]
LAYOUTS: tuple[str, ...] = get_args(CheckpointLayout)


@dataclass(frozen=True)
class MobileLLMConfig:
    """Shapes and options of a MobileLLM decoder.

    `n_layers` counts *unique* blocks. With `layer_sharing` each block runs twice in a row with
    the same weights (MobileLLM's immediate block-wise sharing), so `n_executed_layers` is twice
    that, and each executed block owns its own KV-cache slot.
    """

    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    head_dim: int = 64
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    share_embedding: bool = True
    layer_sharing: bool = False
    max_seq_len: int = 2048
    bos_id: int = 1
    eos_id: int = 2
    extra_eos_ids: tuple[int, ...] = ()  # more stop tokens (Llama-3 tokenizers end turns with several)
    checkpoint_layout: CheckpointLayout = "llama"
    # Llama4-text attention (MobileLLM-R1); the defaults are MobileLLM's plain Llama attention.
    qk_norm: bool = False  # parameter-free RMS norm of q and k after RoPE, on RoPE blocks
    nope_layers: tuple[int, ...] = ()  # blocks without RoPE (and without the qk norm)
    nope_attn_scale: float = 0.0  # NoPE blocks scale q by 1 + s * log1p(floor((pos + 1) / floor)); 0: off
    nope_floor_scale: int = 8192
    attention_chunk: int = 0  # `chunked_layers` attend only within aligned chunks of this many positions
    chunked_layers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # Tuples whatever the caller passed (JSON gives lists), so configs compare and hash.
        for name in ("extra_eos_ids", "nope_layers", "chunked_layers"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
                raise ConfigError(f"config field {name} must be a list of integers, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        self._validate()

    def _validate(self) -> None:
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "head_dim", "max_seq_len",
                     "nope_floor_scale"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"config field {name} must be a positive integer, got {value!r}")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads}) for grouped-query attention"
            )
        if self.head_dim % 2:
            raise ConfigError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if not self.rope_theta > 0 or not self.norm_eps > 0:
            raise ConfigError("rope_theta and norm_eps must be positive")
        for name, value in (("bos_id", self.bos_id), *(("eos_id", v) for v in self.eos_ids)):
            if not 0 <= value < self.vocab_size:
                raise ConfigError(f"{name} {value} is outside the vocabulary (size {self.vocab_size})")
        if self.checkpoint_layout not in LAYOUTS:
            raise ConfigError(f"checkpoint_layout must be one of {', '.join(LAYOUTS)}, got {self.checkpoint_layout!r}")
        for name in ("nope_layers", "chunked_layers"):
            bad = [i for i in getattr(self, name) if not 0 <= i < self.n_layers]
            if bad or len(set(getattr(self, name))) != len(getattr(self, name)):
                raise ConfigError(f"{name} must list distinct block indices in 0..{self.n_layers - 1}, got "
                                  f"{list(getattr(self, name))}")
        if self.chunked_layers and self.attention_chunk <= 0:
            raise ConfigError("chunked_layers need a positive attention_chunk")
        if self.checkpoint_layout == "llama" and (self.qk_norm or self.nope_layers or self.chunked_layers):
            raise ConfigError("qk_norm, nope_layers and chunked_layers are Llama4-text attention; they need "
                              "checkpoint_layout llama4_text")
        if self.checkpoint_layout == "llama4_text" and self.layer_sharing:
            raise ConfigError("Llama4-text checkpoints have no block-wise layer sharing")
        if not self.nope_attn_scale >= 0 or isinstance(self.attention_chunk, bool) or self.attention_chunk < 0:
            raise ConfigError("nope_attn_scale and attention_chunk must be >= 0")

    @property
    def eos_ids(self) -> tuple[int, ...]:
        """Every token that ends generation, the primary one first."""
        return (self.eos_id, *(i for i in self.extra_eos_ids if i != self.eos_id))

    def uses_rope(self, block: int) -> bool:
        return block not in self.nope_layers

    def chunk_limits_context(self, context: int) -> bool:
        """Whether chunked attention changes anything within `context` positions (a chunk at
        least that long is plain causal attention)."""
        return bool(self.chunked_layers) and self.attention_chunk < context

    @property
    def temperature_tuned(self) -> bool:
        return bool(self.nope_layers) and self.nope_attn_scale > 0

    @property
    def n_executed_layers(self) -> int:
        return self.n_layers * (2 if self.layer_sharing else 1)

    @property
    def execution_order(self) -> tuple[int, ...]:
        """Index of the unique block run at each executed position (0, 0, 1, 1, ... with sharing)."""
        repeat = 2 if self.layer_sharing else 1
        return tuple(i for i in range(self.n_layers) for _ in range(repeat))

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts from the shapes alone (no weights are allocated).

        unique: what is stored (a shared embedding and shared blocks count once);
        executed: what one token runs through (an LS block counts once per run).
        """
        attn = self.dim * self.n_heads * self.head_dim * 2 + self.dim * self.kv_dim * 2
        block = attn + 3 * self.dim * self.ffn_dim + 2 * self.dim
        embedding = self.vocab_size * self.dim
        head = 0 if self.share_embedding else embedding
        unique = embedding + head + self.n_layers * block + self.dim
        executed = unique + (self.n_executed_layers - self.n_layers) * block
        return {"unique": unique, "executed": executed, "embedding": embedding, "block": block}

    def replace(self, **changes: object) -> "MobileLLMConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        # Lists, as JSON holds them: a manifest's config compares equal to a fresh to_dict().
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> "MobileLLMConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        try:
            return cls(**data)  # type: ignore[arg-type]
        except TypeError as exc:  # a required field is missing
            raise ConfigError(f"incomplete config: {exc}") from None


def _published(n_layers: int, dim: int, n_heads: int, n_kv_heads: int, ffn_dim: int, *, ls: bool = False) -> MobileLLMConfig:
    # Shapes from the Hugging Face configs of facebook/MobileLLM-*: head_dim 64, vocab 32000 (the
    # Llama-2 SentencePiece tokenizer), rope_theta 1e4, eps 1e-5, shared embedding.
    return MobileLLMConfig(
        vocab_size=32000, dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
        ffn_dim=ffn_dim, layer_sharing=ls,
    )


def _r1(n_layers: int, dim: int, n_heads: int, n_kv_heads: int, ffn_dim: int) -> MobileLLMConfig:
    # MobileLLM-R1 (facebook/MobileLLM-R1-*, `Llama4ForCausalLM` text configs): Llama-3's 128,256-token
    # byte-level BPE vocabulary (bos 128000, three stop tokens), RoPE theta 8e6 with adjacent
    # pairs on every block, the qk norm, no temperature tuning; chunked attention of 32,768 on every
    # block, which is causal attention at any context up to the 32k the post-trained models take.
    return MobileLLMConfig(
        vocab_size=128256, dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads, ffn_dim=ffn_dim,
        rope_theta=8e6, max_seq_len=32768, bos_id=128000, eos_id=128001, extra_eos_ids=(128008, 128009),
        checkpoint_layout="llama4_text", qk_norm=True, attention_chunk=32768, chunked_layers=tuple(range(n_layers)),
    )


# The embedded default model (trained by `make tiny-model`, see model/train.py): LS-style (5 unique
# blocks, 10 executed), shared embedding, its own 4096-token byte-level BPE tokenizer. Sized for a
# few minutes of training on 2 CPU cores; its context is the length it was trained on.
TINY = MobileLLMConfig(
    vocab_size=4096, dim=192, n_layers=5, n_heads=3, n_kv_heads=1, ffn_dim=512,
    head_dim=64, layer_sharing=True, max_seq_len=256,
)

PRESETS: dict[str, MobileLLMConfig] = {
    "tiny": TINY,
    "125M": _published(30, 576, 9, 3, 1536),
    "350M": _published(32, 960, 15, 5, 2560),
    "600M": _published(40, 1152, 18, 6, 3072),
    "1B": _published(54, 1280, 20, 5, 3584),
    "1.5B": _published(54, 1600, 25, 5, 4352),
    "125M-LS": _published(30, 576, 9, 3, 1536, ls=True),
    "350M-LS": _published(32, 960, 15, 5, 2560, ls=True),
    "R1-140M": _r1(15, 576, 9, 3, 2048),
    "R1-360M": _r1(15, 1024, 16, 4, 4096),
    "R1-950M": _r1(22, 1536, 24, 6, 6144),
}

# Where the published weights live on the Hugging Face hub (used only when the user asks).
HUB_IDS: dict[str, str] = {
    "125M": "facebook/MobileLLM-125M",
    "350M": "facebook/MobileLLM-350M",
    "600M": "facebook/MobileLLM-600M",
    "1B": "facebook/MobileLLM-1B",
    "1.5B": "facebook/MobileLLM-1.5B",
    "R1-140M": "facebook/MobileLLM-R1-140M",
    "R1-360M": "facebook/MobileLLM-R1-360M",
    "R1-950M": "facebook/MobileLLM-R1-950M",
}


def get_preset(name: str) -> MobileLLMConfig:
    """Exact lookup; an unknown name is an error that lists the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
