"""Quantization schemes: named objects recorded in artifact manifests."""
