"""The MobileLLM model: config presets, PyTorch definition, checkpoints, tokenizers, training."""

from .config import HUB_IDS, PRESETS, MobileLLMConfig, get_preset
from .modeling import MobileLLM

__all__ = ["HUB_IDS", "PRESETS", "MobileLLM", "MobileLLMConfig", "get_preset"]
