"""The MobileLLM model: config presets, the PyTorch definition and its reference runtime,
checkpoints, held-out text, and the training of the embedded model. Nothing is imported here,
so reading a config does not load torch."""
