"""A process that previews a rolling reboot, waits for "go" on stdin, then confirms it and waits for the
end: the test kills it mid-rollout."""

from __future__ import annotations

import asyncio
import json
import sys

from flexus_ops.config import Settings
from flexus_ops.core.tools import Caller
from flexus_ops.gate.policy import os_principal
from flexus_ops.registry.registry import Registry


async def main(arguments: str) -> None:
    registry = Registry.from_settings(Settings())
    caller = Caller(os_principal(), "cli")
    args = json.loads(arguments)
    preview = await registry.call(caller, "flexus_reboot_servers", args)
    print(json.dumps(preview.model_dump(mode="json")), flush=True)
    sys.stdin.readline()
    token = preview.preview.confirmation_token  # type: ignore[attr-defined]
    await registry.call(caller, "flexus_reboot_servers", {**args, "confirmation_token": token, "wait": True})
    print("finished", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
