"""Reading the JSON files users hand us (configs, manifests, bench results): one error line of the
caller's kind for a missing, unreadable, non-JSON or non-object file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import MobileLLMError


def read_json_object(path: Path, error: type[MobileLLMError]) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path} does not exist") from None
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{path} must hold a JSON object")
    return data
