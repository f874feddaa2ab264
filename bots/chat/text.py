"""Plain text for chat messages: what a notification, a screen reader or a client without rich layout
shows. Slack sends it as every message's fallback ``text`` beside the blocks; a chat without blocks would
send it as the message. The plan and result lines are the registry's (``registry.render``), so a preview
reads the same in a chat, a terminal or an AI client.

Nothing here escapes for any chat's markup: the surface does that, it knows which characters matter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flexus_ops.core.plans import ActionResult, Plan, ServerResult
from flexus_ops.registry.outputs import JobOutput
from flexus_ops.registry.render import plan_text, result_text

OUTCOMES = ("done", "failed", "skipped", "submitted", "unknown", "not started")  # in the order a tally lists them


def ips(server: dict[str, Any]) -> str:
    return ", ".join(server.get("private_ips", []) + server.get("public_ips", [])) or "-"


def status(server: dict[str, Any]) -> str:
    shown = server.get("status") or "?"
    if server.get("task"):
        shown += f" ({server['task']})"
    if server.get("locked"):
        shown += " LOCKED"
    return shown


def server_row(server: dict[str, Any]) -> tuple[str, str, str]:
    """A listing's columns: name, status, IPs."""
    return (server.get("name") or "?", status(server), ips(server))


def server_line(server: dict[str, Any]) -> str:
    return f"{server.get('name')}: {status(server)}, {ips(server)} ({server.get('id')})"


def job_line(out: JobOutput) -> str:
    return f"job {out.job_id}: {out.status}"


def preview_text(plan: Plan) -> str:
    return f"PREVIEW - nothing has changed.\n{plan_text(plan)}"


def result_line(title: str, result: ActionResult) -> str:
    return f"{title}: {result_text(result).splitlines()[0]}"


def progress_line(title: str, note: str) -> str:
    return f"{title}: {note}"


def done_of(done: float, total: float) -> str:
    return f"{int(done)} of {int(total)} done"


def counts(servers: Sequence[ServerResult]) -> str:
    """``1 done · 1 failed``: the tally of a result, each outcome once."""
    tally = {kind: sum(o.outcome == kind for o in servers) for kind in OUTCOMES}
    return " · ".join(f"{n} {kind}" for kind, n in tally.items() if n) or "no servers"


def approvals_line(count: int) -> str:
    return f"{count} approval request(s) waiting" if count else "No approval requests are waiting."
