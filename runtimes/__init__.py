"""Runtime adapters behind one interface (base.DecoderRuntime) and the generation loop."""
