"""The schemas MCP clients see: what a model needs to call a tool well, and no more (the catalog is resent
on every turn, so its size is a cost). Validation still uses the full pydantic models."""

from __future__ import annotations

import copy
from typing import Any

PUBLISHED_KEYWORDS = {
    "type",
    "properties",
    "items",
    "required",
    "enum",
    "const",
    "default",
    "description",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "anyOf",
    "$ref",
    "$defs",
    "additionalProperties",
}


def compact_schema(schema: dict[str, Any], *, output: bool = False) -> dict[str, Any]:
    """What a model needs to call the tool well, and no more: the catalog is resent on every turn, so
    its size is a cost. Validation still uses the full pydantic models (string lengths, patterns,
    every rule), whose errors name the field and the rule. Output schemas are published one level
    deep: the shape a client checks, not every nested field."""

    def walk(node: Any, depth: int) -> Any:
        if isinstance(node, list):
            return [walk(item, depth) for item in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for name, value in node.items():
            if name not in PUBLISHED_KEYWORDS or (name == "default" and value is None):
                continue
            if output and name in ("description", "additionalProperties", "$defs"):
                continue
            if name in ("properties", "$defs"):  # maps of names to schemas, not schemas themselves
                out[name] = {prop: walk(sub, depth + 1) for prop, sub in value.items()}
            else:
                out[name] = walk(value, depth)
        branches = out.get("anyOf")
        if isinstance(branches, list):
            kept = [b for b in branches if b != {"type": "null"}]
            if len(kept) == 1:
                del out["anyOf"]
                out = {**kept[0], **out}
        if output and depth >= 1 and ("$ref" in out or "properties" in out):
            return {"type": "object"}
        if output and depth >= 1 and out.get("type") == "array" and isinstance(out.get("items"), dict):
            out["items"] = {"type": out["items"].get("type", "object")}
        return out

    return walk(copy.deepcopy(schema), 0)
