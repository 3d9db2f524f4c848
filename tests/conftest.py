"""Shared fixtures: tiny random models and Hugging Face checkpoints written by `transformers`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from mobilellm_export.model.checkpoint import save_checkpoint
from mobilellm_export.model.config import MobileLLMConfig
from mobilellm_export.model.modeling import MobileLLM

# `make test` runs two pytest workers on the two cores (pytest-xdist): one torch thread each.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


def small_config(**changes: object) -> MobileLLMConfig:
    base = MobileLLMConfig(vocab_size=257, dim=64, n_layers=3, n_heads=4, n_kv_heads=2, ffn_dim=96,
                           head_dim=16, max_seq_len=128)
    return base.replace(**changes)


def random_model(config: MobileLLMConfig, seed: int = 0, std: float = 0.2) -> MobileLLM:
    # A larger init than training uses, so greedy decoding wanders instead of repeating one token
    # and comparisons between implementations have something to disagree about.
    return MobileLLM(config).init_weights(seed, std=std).eval()


@pytest.fixture
def ls_checkpoint(tmp_path: Path) -> Path:
    """A layer-sharing (LS) checkpoint in MobileLLM's remote-code layout."""
    model = random_model(small_config(layer_sharing=True))
    save_checkpoint(model, tmp_path / "ls")
    return tmp_path / "ls"


PROMPTS = ("Return the number of", "The default value is", "This module provides")


def cli_export(tmp: Path, backend: str, *args: str) -> Path:
    """`mobilellm-export export` of one scheme into `tmp`; the artifact directory it wrote."""
    from mobilellm_export.cli import main

    assert main(["--quiet", "export", "--backend", backend, "--output", str(tmp), *args]) == 0
    (directory,) = [p for p in tmp.iterdir() if p.is_dir()]
    return directory


def small_checkpoint_with_tokenizer(directory: Path) -> Path:
    """A small random model that uses the embedded model's tokenizer (4096 tokens), so stock
    runners and apps can load its artifacts."""
    import shutil

    from mobilellm_export.model.sources import embedded_dir

    save_checkpoint(random_model(small_config(vocab_size=4096, dim=64, n_layers=2)), directory)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(embedded_dir() / name, directory / name)
    return directory


@pytest.fixture(scope="session")
def embedded():
    from mobilellm_export.model.sources import load_model

    return load_model(None)


def exported(backend: str, *args: str):
    """A module-scoped fixture: the embedded model exported with `export --backend <backend> <args>`
    (once per test module; exports are the slow part)."""
    @pytest.fixture(scope="module")
    def artifact(tmp_path_factory) -> Path:
        return cli_export(tmp_path_factory.mktemp(backend), backend, *args)
    return artifact


def assert_quality(directory: Path, min_agreement: float, max_ppl_increase: float) -> None:
    """`verify` passes, with top-1 agreement and perplexity increase within the given bounds."""
    from mobilellm_export.verify import verify_artifact

    report = verify_artifact(directory, eval_tokens=2048)
    assert report.passed, [c for c in report.checks if c.passed is False]
    assert report.figures["agreement"] >= min_agreement
    assert report.figures["perplexity_increase"] <= max_ppl_increase


_BLOCKER = '''
import os, sys

class _Blocker:
    """Refuses the packages named in MOBILELLM_TEST_BLOCK, and everything below them."""
    names = tuple(n for n in os.environ.get("MOBILELLM_TEST_BLOCK", "").split(",") if n)

    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in self.names):
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, _Blocker())
'''


def run_blocked(tmp: Path, blocked: tuple[str, ...], *args: str) -> subprocess.CompletedProcess[str]:
    """`mobilellm-export ARGS` in a fresh process (and its children) where importing any of
    `blocked` fails: a sitecustomize on PYTHONPATH installs the blocker at interpreter start."""
    import os
    import sys

    site = tmp / "blocker"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(site), "MOBILELLM_TEST_BLOCK": ",".join(blocked)}
    exe = Path(sys.executable).parent / "mobilellm-export"
    return subprocess.run([str(exe), "--quiet", *args], capture_output=True, text=True, env=env, timeout=600,
                          cwd=tmp)
