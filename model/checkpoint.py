"""Loading and saving Hugging Face-format MobileLLM checkpoints, strictly.

A checkpoint directory holds `config.json` (architecture `MobileLLMForCausalLM` with
`share_embedding`/`layer_sharing`, or `LlamaForCausalLM` with `tie_word_embeddings`) and weights
as `model.safetensors`, sharded safetensors with `model.safetensors.index.json`, or
`pytorch_model.bin` (optionally sharded with its index). Every tensor the architecture needs must
be present with the right shape; anything missing, mis-shaped, unexpected or unreadable is a
`CheckpointError` naming the tensor or file. A half-loaded model never comes back.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mobilellm_export.errors import CheckpointError, ConfigError
from mobilellm_export.jsonfile import read_json_object

from . import llama4
from .config import MobileLLMConfig
from .hf_fields import llama_family_fields, plain_rope_theta, stop_ids, whole_number
from .modeling import MobileLLM, replace_parameter

SUPPORTED_ARCHITECTURES = ("MobileLLMForCausalLM", "LlamaForCausalLM", "Llama4ForCausalLM")
# Buffers some old checkpoints carry that hold no weights (recomputed from the config).
_IGNORED_TENSORS = re.compile(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the model in eval mode plus where it came from."""

    model: MobileLLM
    config: MobileLLMConfig
    directory: Path | None
    source: str  # a --model spec that loads it again: an absolute directory, a hub id, "embedded", "synthetic:<preset>"
    synthetic: bool = False  # random weights: quality figures mean nothing


# -- config.json ---------------------------------------------------------------------------------

def config_from_hf(data: dict[str, Any]) -> MobileLLMConfig:
    """Map a Hugging Face config.json onto our config, refusing features we do not implement."""
    archs = data.get("architectures") or []
    arch = archs[0] if isinstance(archs, list) and archs else None
    if arch not in SUPPORTED_ARCHITECTURES:
        raise CheckpointError(
            f"unsupported architecture {arch!r} in config.json; expected one of {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    if data.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"unsupported hidden_act {data['hidden_act']!r}; MobileLLM uses silu (SwiGLU)")
    if data.get("attention_bias") or data.get("mlp_bias"):
        raise CheckpointError("checkpoints with attention or MLP biases are not supported")
    try:
        if arch == llama4.ARCHITECTURE:
            return llama4.config_from_llama4(data)
        return _config_from_llama(data, arch)
    except KeyError as exc:
        raise CheckpointError(f"config.json lacks required field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"config.json has a field of the wrong type: {exc}") from None
    except ConfigError as exc:
        raise CheckpointError(f"config.json describes an invalid model: {exc}") from None


def _config_from_llama(data: dict[str, Any], arch: str) -> MobileLLMConfig:
    if arch == "MobileLLMForCausalLM":
        shared = bool(data.get("share_embedding", True))
        sharing = bool(data.get("layer_sharing", False))
    else:
        shared = bool(data.get("tie_word_embeddings", True))
        sharing = False
    eos = stop_ids(data.get("eos_token_id", 2))
    whole = whole_number
    dim = whole(data, "hidden_size")
    n_heads = whole(data, "num_attention_heads")
    return MobileLLMConfig(
        vocab_size=whole(data, "vocab_size"),
        dim=dim,
        n_layers=whole(data, "num_hidden_layers"),
        n_heads=n_heads,
        n_kv_heads=whole(data, "num_key_value_heads", n_heads),
        ffn_dim=whole(data, "intermediate_size"),
        # No default from a zero head count: the config's own check then names num_attention_heads.
        head_dim=whole(data, "head_dim", dim // n_heads if n_heads > 0 else 0),
        rope_theta=plain_rope_theta(data, 10000.0),
        norm_eps=float(data.get("rms_norm_eps", 1e-5)),
        share_embedding=shared,
        layer_sharing=sharing,
        max_seq_len=whole(data, "max_position_embeddings", 2048),
        bos_id=int(data.get("bos_token_id", 1) if data.get("bos_token_id") is not None else 1),
        eos_id=eos[0],
        extra_eos_ids=eos[1:],
    )


def config_to_hf(config: MobileLLMConfig) -> dict[str, Any]:
    """The config.json for `config`: Llama4-text for that layout, else the MobileLLM remote-code
    one the published checkpoints use."""
    if config.checkpoint_layout == "llama4_text":
        return llama4.config_to_llama4(config)
    return {
        "architectures": ["MobileLLMForCausalLM"],
        "model_type": "mobilellm",
        **llama_family_fields(config),
        "mlp_bias": False,
        "share_embedding": config.share_embedding,
        "layer_sharing": config.layer_sharing,
        "tie_word_embeddings": False,
        # Like the published LS checkpoints; our own model handles LS caching correctly.
        "use_cache": not config.layer_sharing,
    }


def read_config(directory: Path) -> MobileLLMConfig:
    return config_from_hf(_read_config_json(directory))


def _read_config_json(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory} has no config.json")
    return read_json_object(path, CheckpointError)


# -- weights -------------------------------------------------------------------------------------

def _hf_name(name: str, layout: str = "llama") -> str:
    if layout == "llama4_text":
        return llama4.hf_name(name)
    return name if name.startswith("lm_head.") else f"model.{name}"


# safetensors' dtype names (its format's header), as torch dtypes.
_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor read into a buffer of its own.

    Not safetensors' `load_file`: it maps the whole file and hands out views of that one mapping,
    so no tensor's memory goes back to the system until every tensor is dropped, and an export
    frees the float matrices the quantization stage replaced (0.43 GB of a 125M model) before
    lowering. The format is an 8-byte little-endian header length, a JSON header of name ->
    dtype, shape and [begin, end) byte offsets into the data that follows, then the data;
    tests/model/test_checkpoint.py reads files both ways and compares.
    """
    def corrupt(why: str) -> CheckpointError:
        return CheckpointError(f"cannot read {path.name}: corrupt or truncated safetensors file ({why})")

    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 < length <= size - 8:
                raise corrupt("no valid header length")
            try:
                header = json.loads(f.read(length))
            except (UnicodeDecodeError, ValueError):
                raise corrupt("header is not JSON") from None
            if not isinstance(header, dict):
                raise corrupt("header is not a JSON object")
            tensors: dict[str, torch.Tensor] = {}
            for name, entry in header.items():
                if name == "__metadata__":
                    continue
                try:
                    dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
                    shape = [int(n) for n in entry["shape"]]
                    begin, end = (int(n) for n in entry["data_offsets"])
                except (KeyError, TypeError, ValueError):
                    raise corrupt(f"tensor {name!r} has a malformed or unsupported header entry") from None
                # Checked before allocating: a damaged header may ask for a negative or huge shape.
                nbytes = math.prod(shape) * dtype.itemsize
                if min(shape, default=0) < 0 or end - begin != nbytes or begin < 0 or 8 + length + end > size:
                    raise corrupt(f"tensor {name!r} lies outside the file or has the wrong size")
                tensor = torch.empty(shape, dtype=dtype)
                f.seek(8 + length + begin)
                if nbytes and f.readinto(tensor.reshape(-1).view(torch.uint8).numpy()) != nbytes:
                    raise corrupt(f"tensor {name!r} is cut short")
                tensors[name] = tensor
            return tensors
    except OSError as exc:
        raise corrupt(str(exc)) from None


def _read_torch_bin(path: Path) -> dict[str, torch.Tensor]:
    import pickle
    import zipfile

    try:
        # weights_only: a checkpoint is data, never code to run.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"cannot read {path.name}: corrupt or truncated PyTorch file ({str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path.name} does not hold a flat dict of tensors")
    return state


def _read_index(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        files = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{index.name} is not a valid shard index ({exc})") from None
    root = index.parent.resolve()
    for f in files:
        if not isinstance(f, str) or not f or Path(f).is_absolute() or not (index.parent / f).resolve().is_relative_to(root):
            raise CheckpointError(f"{index.name} names a shard outside the checkpoint directory: {f!r}")
    missing = [f for f in files if not (index.parent / f).is_file()]
    if missing:
        raise CheckpointError(f"shard(s) named in {index.name} are missing: {', '.join(missing)}")
    return [index.parent / f for f in files]


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory, by their Hugging Face names."""
    if (directory / "model.safetensors").is_file():
        return _read_safetensors(directory / "model.safetensors")
    if (directory / "model.safetensors.index.json").is_file():
        shards = _read_index(directory / "model.safetensors.index.json")
        return _merge(_read_safetensors(p) for p in shards)
    if (directory / "pytorch_model.bin").is_file():
        return _read_torch_bin(directory / "pytorch_model.bin")
    if (directory / "pytorch_model.bin.index.json").is_file():
        shards = _read_index(directory / "pytorch_model.bin.index.json")
        return _merge(_read_torch_bin(p) for p in shards)
    raise CheckpointError(
        f"{directory} has no weights (model.safetensors, model.safetensors.index.json or pytorch_model.bin)"
    )


def _merge(parts: Any) -> dict[str, torch.Tensor]:
    merged: dict[str, torch.Tensor] = {}
    for part in parts:
        clash = merged.keys() & part.keys()
        if clash:
            raise CheckpointError(f"tensor {sorted(clash)[0]!r} appears in more than one shard")
        merged.update(part)
    return merged


def load_state_into(model: MobileLLM, tensors: dict[str, torch.Tensor]) -> None:
    """Put HF-named `tensors` into `model`, refusing anything missing, extra or mis-shaped: copied
    into existing parameters, taken as the parameters themselves where they are on the meta device."""
    tensors = {k: v for k, v in tensors.items() if not _IGNORED_TENSORS.match(k)}
    layout = model.config.checkpoint_layout
    if layout == "llama4_text":
        tensors = llama4.to_rotate_half(tensors, model.config.head_dim)
    expected = {_hf_name(name, layout): param for name, param in model.state_dict().items()}
    if model.lm_head is None and "lm_head.weight" in tensors:
        # Tied checkpoints sometimes store the output matrix as well. Accept it only if it really
        # is the embedding; a different matrix would mean the model is not the one described.
        head = tensors.pop("lm_head.weight")
        embed = tensors.get("model.embed_tokens.weight")
        if embed is None:
            raise CheckpointError(
                "checkpoint is missing tensor 'model.embed_tokens.weight' (it has only lm_head.weight: this is the "
                "known-bad safetensors conversion of MobileLLM; use the repository's pytorch_model.bin)"
            )
        if head.shape != embed.shape or not torch.equal(head, embed):
            raise CheckpointError("config says the embedding is shared, but lm_head.weight differs from model.embed_tokens.weight")
    missing = sorted(expected.keys() - tensors.keys(), key=_natural)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"checkpoint is missing tensor {missing[0]!r}{more}")
    unexpected = sorted(tensors.keys() - expected.keys(), key=_natural)
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(f"checkpoint has unexpected tensor {unexpected[0]!r}{more} for this config")
    for name, param in expected.items():
        value = tensors[name]
        if tuple(value.shape) != tuple(param.shape):
            raise CheckpointError(f"tensor {name!r} has shape {tuple(value.shape)}, config needs {tuple(param.shape)}")
        if not value.is_floating_point():
            raise CheckpointError(f"tensor {name!r} has dtype {value.dtype}; expected floating point weights")
        if not torch.isfinite(value).all():
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(f"tensor {name!r} holds {bad} NaN or infinite value(s); the checkpoint is damaged")
    with torch.no_grad():
        for name, param in model.named_parameters():
            value = tensors[_hf_name(name, layout)]
            if not param.is_meta:
                param.copy_(value)
                continue
            # An empty-weights model takes the checkpoint's tensors themselves (converted only if
            # they are not float32), so the weights are in memory once.
            replace_parameter(model, name, torch.nn.Parameter(value.to(torch.float32).contiguous(),
                                                              requires_grad=param.requires_grad))


def _natural(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


# -- whole checkpoints ---------------------------------------------------------------------------

def load_checkpoint(directory: Path, *, source: str | None = None, max_context: int | None = None) -> Checkpoint:
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    data = _read_config_json(directory)
    config = config_from_hf(data)
    _check_size(config, directory)
    tensors = read_weights(directory)
    model = MobileLLM(config, max_context=max_context, empty_weights=True)
    load_state_into(model, tensors)
    model.eval()
    return Checkpoint(model=model, config=config, directory=directory, source=source or str(directory),
                      synthetic=bool(data.get(SYNTHETIC_KEY, False)))


def _check_size(config: MobileLLMConfig, directory: Path) -> None:
    """Refuse a config whose float32 parameters would not fit in memory before allocating them (a
    vocab_size of 1e12 would otherwise ask for terabytes)."""
    need = 4 * config.parameter_counts()["unique"]
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # Linux and macOS
    if need > available:
        raise CheckpointError(f"{directory}/config.json describes {need / 1e9:.1f} GB of float32 parameters, more than "
                              f"this machine's {available / 1e9:.1f} GB of memory; is the config right?")


# Written into config.json of checkpoints with random weights, so every later report says so.
SYNTHETIC_KEY = "synthetic_weights"


def save_checkpoint(model: MobileLLM, directory: Path, *, dtype: torch.dtype = torch.float32,
                    synthetic: bool = False) -> None:
    """Write `config.json` + `model.safetensors` in Hugging Face layout (shared tensors once)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    layout = model.config.checkpoint_layout
    tensors = {_hf_name(k, layout): v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    if layout == "llama4_text":
        tensors = {k: v.contiguous() for k, v in llama4.to_adjacent_pairs(tensors, model.config.head_dim).items()}
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    config = config_to_hf(model.config)
    if synthetic:
        config[SYNTHETIC_KEY] = True
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def download(hub_id: str, *, config_only: bool = False, revision: str | None = None) -> Path:
    """Fetch a checkpoint's files (or just its config.json) from the Hugging Face hub into
    huggingface_hub's cache, and return the snapshot directory."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    patterns = ["config.json"]
    if not config_only:
        patterns += ["*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin",
                     "pytorch_model.bin.index.json", "tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                     "chat_template.jinja"]
    try:
        path = _with_stall_limit(lambda: snapshot_download(hub_id, revision=revision, allow_patterns=patterns), hub_id)
    except RepositoryNotFoundError:
        raise CheckpointError(f"no Hugging Face repository {hub_id!r} (or it needs a token: set HF_TOKEN)") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise CheckpointError(f"cannot download {hub_id!r}: {str(exc).splitlines()[0]}") from None
    return Path(path)


# huggingface_hub's own timeouts do not cover every request: behind a proxy that accepts the
# connection and never answers, snapshot_download waited for 25 minutes and more. So the download
# runs in a thread watched from here: it fails once no byte has reached the cache for this long.
STALL_LIMIT_S = 60.0


def _with_stall_limit(fetch: Callable[[], str], hub_id: str) -> str:
    from huggingface_hub import constants

    limit_s = STALL_LIMIT_S

    repo_cache = Path(constants.HF_HUB_CACHE) / f"models--{hub_id.replace('/', '--')}"
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["path"] = fetch()
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    worker = threading.Thread(target=run, name=f"download {hub_id}", daemon=True)
    worker.start()
    seen, last_change, last_note = -1, time.monotonic(), time.monotonic()
    print(f"downloading {hub_id} from the Hugging Face hub into {constants.HF_HUB_CACHE}", file=sys.stderr, flush=True)
    while worker.is_alive():
        worker.join(timeout=1.0)
        size = sum(f.stat().st_size for f in repo_cache.rglob("*") if f.is_file()) if repo_cache.is_dir() else 0
        now = time.monotonic()
        if size != seen:
            seen, last_change = size, now
        elif now - last_change > limit_s:
            # The thread is left to the interpreter's exit (daemon): Python cannot stop it.
            raise CheckpointError(f"downloading {hub_id!r}: no data for {limit_s:.0f} s (a proxy or network that "
                                  "does not answer?); check HTTPS_PROXY / HF_ENDPOINT, or pass a local directory")
        if now - last_note > 10:
            print(f"  {seen / 1e6:.1f} MB in the cache so far", file=sys.stderr, flush=True)
            last_note = now
    if "error" in outcome:
        raise outcome["error"]
    return outcome["path"]


def looks_like_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and not Path(text).exists()
