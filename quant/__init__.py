"""Quantization, one stage: schemes (what is stored), methods (how codes are chosen) and the stage
that computes every weight's codes once for all backends."""
