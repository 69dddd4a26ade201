"""Reading the JSON files of netflowgen's artifact folders (model, detector): one clear InputError
for a missing file, bytes that are not UTF-8 JSON, or another artifact's format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from netflowgen.rejects import InputError


def read_artifact_json(path: Path, expected_format: str, what: str, hint: str = "") -> dict[str, Any]:
    """The JSON object at `path`, checked to carry `"format": expected_format`.

    `what` names the artifact in messages ("model", "detector"); `hint` says how one is made."""
    if not path.exists():
        raise InputError(f"{path.parent}: not a netflowgen {what} folder (no {path.name}{'; ' + hint if hint else ''})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != expected_format:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise InputError(f"{path}: not a netflowgen {what} (format {found!r}, expected {expected_format!r})")
    return data
