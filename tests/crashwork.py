"""A process that previews a stop, waits for "go" on stdin, then confirms it: the test kills it mid-way."""

from __future__ import annotations

import asyncio
import json
import sys

from flexus_ops.config import Settings
from flexus_ops.core.tools import Caller
from flexus_ops.gate.policy import os_principal
from flexus_ops.registry.registry import Registry


async def main(server_id: str) -> None:
    registry = Registry.from_settings(Settings())
    caller = Caller(os_principal(), "cli")
    preview = await registry.call(caller, "flexus_stop_servers", {"servers": [server_id]})
    print(json.dumps(preview.model_dump(mode="json")), flush=True)
    sys.stdin.readline()
    token = preview.preview.confirmation_token  # type: ignore[attr-defined]
    await registry.call(caller, "flexus_stop_servers", {"servers": [server_id], "confirmation_token": token})
    print("finished", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
