"""``flexus-ops demo``: a guided tour on the sandbox cloud (list, preview a stop, confirm, a replayed
token, the audit trail). Its settings come from its own arguments only, never from the environment, so
it never touches a real cloud nor the user's state (and it edits no environment variable)."""

from __future__ import annotations

import argparse
from typing import Any

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from .cli import EXIT_OK, ProgressBar, _caller, _quiet_libraries, _run
from .config import Settings
from .registry.registry import Registry


class DemoSettings(Settings):
    """Settings from the demo's own values alone: no variable of the environment reaches the tour."""

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource, *_sources: Any, **_: Any
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def cmd_demo(args: argparse.Namespace) -> int:
    _quiet_libraries()
    import tempfile
    from pathlib import Path

    from .registry.render import render

    state = tempfile.mkdtemp(prefix="flexus-demo-")
    settings = DemoSettings(state_dir=Path(state), sandbox_job_seconds=args.job_seconds, job_poll_seconds=0.25)

    def step(title: str) -> None:
        print(f"\n== {title} ==")

    async def body(registry: Registry) -> int:
        caller = _caller()
        step(f"1. The fleet ({registry.describe_target()})")
        listing = await registry.call(caller, "flexus_list_servers", {"status": "ACTIVE", "limit": 5})
        print(render(listing))
        targets = [server["name"] for server in listing.servers[:2]]  # type: ignore[attr-defined]
        step(f"2. Preview: stop {', '.join(targets)} (nothing changes yet)")
        preview = await registry.call(caller, "flexus_stop_servers", {"servers": targets})
        print(render(preview))
        step("3. Confirm with the token from the preview; follow the job")
        token = preview.preview.confirmation_token  # type: ignore[attr-defined]
        result = await registry.call(
            caller, "flexus_stop_servers", {"servers": targets, "confirmation_token": token}, progress=ProgressBar()
        )
        print(render(result))
        step("4. The same token again: single use, so nothing runs twice; you get the recorded outcome")
        again = await registry.call(caller, "flexus_stop_servers", {"servers": targets, "confirmation_token": token})
        print(render(again))
        step("5. The audit trail (hash-chained; `flexus-ops audit verify` checks it)")
        for record in await registry.records.audit_records():
            print(f"  {record.seq}. {record.event:10} by {record.person} via {record.surface}: {record.tool}")
        report = await registry.records.audit_report()
        print(f"  chain: {'intact' if report.intact else 'BROKEN'}")
        print(f"\n(the demo's state is in {state}; your own audit log was not touched)")
        return EXIT_OK

    return _run(body, registry_for=lambda: Registry.from_settings(settings))
