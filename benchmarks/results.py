"""Result files of the benchmarks: each kind of file has its own schema version.

A file states its kind and version at the top ({"kind": "bench", "schema_version": 1, ...}), so
a reader never mistakes one kind of result for another; a reader accepts only the version it
knows. Bump a kind's version when its shape changes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mobilellm_export import jsonschemas
from mobilellm_export.errors import UnsupportedError
from mobilellm_export.jsonfile import read_json_object

VERSIONS = {
    "bench": 2,  # `mobilellm-export bench --json` (benchmarks/harness); 2: stock runner figures as `speed`
    "executorch-peer": 1,  # benchmarks/peers/executorch.py
    "onnx-peer": 1,  # benchmarks/peers/onnx.py
    "llamacpp-peer": 1,  # benchmarks/peers/llamacpp.py
    "quality": 1,  # benchmarks/quality.py
}


def header(kind: str) -> dict[str, Any]:
    return {"kind": kind, "schema_version": VERSIONS[kind],
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


# Kinds that this package reads back (bench --results / --compare), with the schema they follow.
SCHEMAS = {"bench": jsonschemas.BENCH_RESULTS}


def read(path: Path, kind: str) -> dict[str, Any]:
    data = read_json_object(path, UnsupportedError)
    if data.get("kind") != kind or data.get("schema_version") != VERSIONS[kind]:
        raise UnsupportedError(f"{path} is not a {kind} result of schema version {VERSIONS[kind]}")
    problem = jsonschemas.first_problem(data, SCHEMAS[kind]) if kind in SCHEMAS else None
    if problem:
        raise UnsupportedError(f"{path} is not a complete {kind} result: {problem}")
    return data
