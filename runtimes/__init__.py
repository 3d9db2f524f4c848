"""Everything needed to run an artifact, and nothing of the exporter: the manifest reader, the
runtime contract and its adapters, tokenizers, generation, scoring and the timing loop."""
