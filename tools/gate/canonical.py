"""One JSON spelling for everything that is hashed (argument bindings, plan fingerprints, the audit chain)."""

from __future__ import annotations

import json
from typing import Any


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
