"""The quality benchmark's plan and sizes (running it takes an hour: `make bench`)."""

from types import SimpleNamespace

import pytest

from mobilellm_export.benchmarks import results
from mobilellm_export.benchmarks.quality import EMBEDDED_ROWS, QUICK_ROWS, REAL_ROWS, _model_bytes
from mobilellm_export.export.plan import ExportSpec, plan_exports


@pytest.mark.parametrize("row", sorted({*REAL_ROWS, *EMBEDDED_ROWS, *QUICK_ROWS}, key=lambda r: r.folder),
                         ids=lambda r: r.folder)
def test_every_row_is_a_valid_export(row):
    (planned,) = plan_exports(ExportSpec(backends=(row.backend,), quants=(row.quant,), group_size=row.group_size,
                                         method=row.method))
    assert planned.scheme.linear.group_size in (row.group_size, None)  # None: int8 per channel


def test_rows_are_distinct_folders():
    for rows in (REAL_ROWS, EMBEDDED_ROWS):
        assert len({r.folder for r in rows}) == len(rows)


def test_model_bytes_leave_the_tokenizer_out():
    files = {"model.onnx": 10, "model.onnx.data": 1000, "tokenizer.json": 300, "tokenizer_config.json": 7,
             "manifest.json": 50}
    manifest = SimpleNamespace(files={n: {"bytes": b} for n, b in files.items()},
                               runtime=SimpleNamespace(tokenizer="tokenizer.json"))
    assert _model_bytes(manifest) == 1010


def test_results_have_their_own_kind():
    assert results.header("quality")["kind"] == "quality"
