"""The JSON schemas shipped in mobilellm_export/schemas/, and one way to report a violation.

Every JSON file this tool reads back from users' disks (artifact manifests, app bundle manifests,
benchmark results) is validated whole against its schema before any key is read, so a file with a
missing or mistyped key is one error line naming the place, never a KeyError deep inside.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

ARTIFACT_MANIFEST = "artifact-manifest.schema.json"
BUNDLE_MANIFEST = "bundle-manifest.schema.json"
BENCH_RESULTS = "bench-results.schema.json"


@cache
def load(name: str) -> dict[str, Any]:
    return json.loads(resources.files("mobilellm_export").joinpath(f"schemas/{name}").read_text(encoding="utf-8"))


def first_problem(data: Any, name: str) -> str | None:
    """None if `data` follows schema `name`, else where and how it first breaks it:
    "at runtime/eos_ids: [] should be non-empty"."""
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(load(name)).iter_errors(data),
                    key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path]))
    if not errors:
        return None
    first = errors[0]
    while first.context:  # oneOf / anyOf: the closest alternative's own reason
        first = min(first.context, key=lambda e: len(e.absolute_path))
    where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
    if first.validator == "pattern" and "description" in first.schema:  # say what is wanted, not the regex
        return f"at {where}: {first.instance!r} is not allowed ({first.schema['description']})"
    return f"at {where}: {first.message}"
