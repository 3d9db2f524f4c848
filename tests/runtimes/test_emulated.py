"""The emulated ARM64 target: the driver that runs inside the emulator computes what this package's
ExecuTorch runtime computes (checked natively, so it runs everywhere); the target's refusals are one
line each; and, where `make arm64-env` has built the sysroot, the whole comparison on qemu."""

import pytest
import torch

from mobilellm_export.cli import main
from mobilellm_export.runtimes.emulated.qemu import Emulator, default_sysroot, run_driver
from mobilellm_export.runtimes.registry import open_artifact

from ..conftest import cli_export, small_checkpoint_with_tokenizer


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("emulated")
    ckpt = small_checkpoint_with_tokenizer(tmp / "ckpt")
    et = cli_export(tmp / "et", "executorch", "--model", str(ckpt), "--quant", "int4", "--max-context", "64")
    onnx = cli_export(tmp / "onnx", "onnx", "--model", str(ckpt), "--quant", "fp32", "--max-context", "64")
    return et, onnx


def test_the_driver_computes_what_the_runtime_computes(artifacts):
    """The lean loading inside the emulator (ExecuTorch's _C and the two kernel libraries, no
    mobilellm_export) gives this package's ExecuTorch runtime's logits, natively."""
    et, _ = artifacts
    prompt = [1, 40, 7, 300, 12]
    result, (logits,) = run_driver(et, {"prompts": [prompt], "steps": 6}, None)
    runtime = open_artifact(et).runtime
    feed, pos, ours = prompt, 0, []
    for _ in range(7):
        row = runtime.forward(feed, pos)
        ours.append(row)
        pos += len(feed)
        feed = [int(row.argmax())]
    assert result["tokens"] == [[int(r.argmax()) for r in ours]]
    torch.testing.assert_close(logits, torch.stack(ours), rtol=0, atol=0)


def test_the_emulated_target_refuses_in_one_line(artifacts, tmp_path, monkeypatch, capsys):
    et, onnx = artifacts
    assert main(["--quiet", "verify", str(onnx), "--target", "qemu-aarch64"]) == 2
    assert "runs ExecuTorch artifacts" in capsys.readouterr().err
    monkeypatch.setenv("MOBILELLM_ARM64_SYSROOT", str(tmp_path / "none"))
    assert main(["--quiet", "verify", str(et), "--target", "qemu-aarch64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "make arm64-env" in err[0]


@pytest.mark.skipif(not (default_sysroot() / "usr" / "bin" / "python3.11").is_file(),
                    reason="no arm64 sysroot (make arm64-env; MOBILELLM_ARM64_SYSROOT)")
def test_greedy_tokens_match_on_emulated_arm64(artifacts):
    from mobilellm_export.verify_emulated import verify_emulated

    Emulator.find()  # the sysroot is usable
    report = verify_emulated(artifacts[0])
    assert report.passed and report.figures["tokens_equal"], [c.detail for c in report.checks]
    assert report.figures["max_logit_diff"] < 1.0


def test_where_two_cpus_part_is_measured_against_their_earlier_difference():
    from mobilellm_export.runtimes.emulated.qemu import compare_runs

    host_logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.9], [0.0, 0.0, 4.0]])
    same = compare_runs({"tokens": [[0, 1, 2]]}, [host_logits], {"tokens": [[0, 1, 2]], "machine": "aarch64"},
                        [host_logits.clone()], 2)
    assert same.tokens_equal and same.max_logit_diff == 0 and same.min_margin == pytest.approx(0.1)
    # Step 0 already differs by 0.3, step 1 (margin 0.1) flips: a near-tie under measured noise.
    arm = host_logits.clone()
    arm[0, 1] += 0.3
    arm[1, 2] += 0.2
    tie = compare_runs({"tokens": [[0, 1, 2]]}, [host_logits], {"tokens": [[0, 2, 2]], "machine": "aarch64"}, [arm], 2)
    assert tie.first_difference == (0, 1) and tie.margin_at_difference == pytest.approx(0.1)
    assert tie.difference_before == pytest.approx(0.3) and tie.margin_at_difference <= tie.difference_before
    # The same flip with identical earlier steps: nothing measured excuses it.
    arm = host_logits.clone()
    arm[1, 2] += 0.2
    flip = compare_runs({"tokens": [[0, 1, 2]]}, [host_logits], {"tokens": [[0, 2, 2]], "machine": "aarch64"}, [arm], 2)
    assert flip.difference_before == 0 and flip.margin_at_difference > flip.difference_before
