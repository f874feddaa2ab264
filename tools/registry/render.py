"""Short text for people (and the text part of MCP results): a line per server, no indented JSON.
Every surface renders with these, so a preview reads the same in Slack, a terminal or an AI client."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from ..core.plans import ActionReport, ActionResult, ChangeOutput, Plan, Preview
from .outputs import JobOutput, ListServersOutput, ShowServerOutput

MAX_LINES = 40


def _server_line(server: dict[str, Any]) -> str:
    ips = ", ".join(server.get("private_ips", []) + server.get("public_ips", [])) or "-"
    status = server.get("status") or "?"
    if server.get("task"):
        status += f" ({server['task']})"
    lock = " LOCKED" if server.get("locked") else ""
    lock += " FROZEN" if server.get("frozen") else ""
    billing = f"  {server['billing']}" if server.get("billing") else ""
    return f"{server.get('name') or '?'}  {status}{lock}  {ips}{billing}  {server['id']}"


def _capped(lines: list[str], total: int | None = None) -> list[str]:
    if len(lines) <= MAX_LINES:
        return lines
    return [*lines[:MAX_LINES], f"... and {(total or len(lines)) - MAX_LINES} more"]


def plan_text(plan: Plan) -> str:
    lines = [plan.summary + ":"]
    lines += _capped([f"- {item.name or item.server_id} ({item.status or '?'}): {item.note}" for item in plan.items])
    for field, change in plan.changes.items():
        if isinstance(change, dict):
            lines.append(f"  {field}: {change.get('from')!s} -> {change.get('to')!s}")
        elif field != "reason":
            lines.append(f"  {field}: {change}")
    names = {item.server_id: item.name or item.server_id for item in plan.items}
    if plan.waves and len(plan.waves) > 1:
        lines += _capped(
            [f"  wave {n}: {', '.join(names.get(sid, sid) for sid in ids)}" for n, ids in enumerate(plan.waves, 1)]
        )
    return "\n".join(lines)


def preview_text(preview: Preview) -> str:
    lines = ["PREVIEW - nothing has changed.", plan_text(preview.plan)]
    if preview.confirmation_token:
        lines.append(f"confirmation_token: {preview.confirmation_token} (expires {preview.expires_at})")
    lines.append(preview.next_step)
    return "\n".join(lines)


def result_text(result: ActionResult) -> str:
    lines = [result.message]
    lines += _capped(
        [f"- {o.name or o.server_id}: {o.outcome}{f' ({o.detail})' if o.detail else ''}" for o in result.servers]
    )
    if result.rollout is not None:
        lines += _capped(
            [
                f"wave {w.number}: {w.state}{f' ({w.note})' if w.note else ''}"
                for w in result.rollout.waves
                if w.state != "waiting"
            ]
        )
    if result.job_ids:
        lines.append("jobs: " + ", ".join(result.job_ids))
    if result.resume is not None:
        lines.append(
            f"to go on with the {len(result.resume.arguments.get('servers', []))} server(s) not started, preview "
            f"{result.resume.tool} with: {json.dumps(result.resume.arguments, separators=(',', ':'))}"
        )
    if result.undo is not None:
        call = f": {result.undo.tool} {json.dumps(result.undo.arguments)}" if result.undo.tool else ""
        lines.append(f"undo{call} ({result.undo.note})" if call else f"undo: none ({result.undo.note})")
    return "\n".join(lines)


def render(output: BaseModel) -> str:
    if isinstance(output, ChangeOutput):
        if output.preview is not None:
            return preview_text(output.preview)
        assert output.result is not None
        return result_text(output.result)
    if isinstance(output, ActionReport):
        view = output.action
        lines = [f"action {view.id}: {view.tool} by {view.person}, {view.state}", plan_text(view.plan)]
        if output.result is not None:
            lines.append(result_text(output.result))
        elif view.rollout is not None:
            lines.append(f"rolling out: {view.rollout.progress_note()}")
        return "\n".join(lines)
    if isinstance(output, ListServersOutput):
        head = f"{output.count} server(s), page {output.page}:"
        lines = [head, *_capped([_server_line(s) for s in output.servers], len(output.servers))]
        if output.next_page:
            lines.append(f"more: ask for page {output.next_page}")
        return "\n".join(lines)
    if isinstance(output, ShowServerOutput):
        server = output.server
        if "private_ips" in server or ("status" in server and "OS-EXT-STS:vm_state" not in server):
            line = _server_line(server)
            extra = f"  flavor {server['flavor']}" if server.get("flavor") else ""
            az = f"  az {server['az']}" if server.get("az") else ""
            return line + extra + az
        return f"{server.get('name')} ({server['id']}): {server.get('status')}; full detail in the structured result"
    if isinstance(output, JobOutput):
        failed = [s for s in output.servers if s.get("status") == "FAIL"]
        head = f"job {output.job_id}: {output.status}, {len(output.servers)} server(s)"
        if failed:
            head += f", {len(failed)} failed"
        lines = [
            head,
            *_capped(
                [
                    f"- {s['server_id']}: {s.get('error_code') or ''} {s.get('fail_reason') or ''}".rstrip()
                    for s in failed
                ]
            ),
        ]
        return "\n".join(lines)
    return output.model_dump_json(exclude_none=True)
