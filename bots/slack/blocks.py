"""Block Kit rendering: pure functions from registry outputs (and the chat core's answers) to Slack
messages and modals.

Every message also carries a plain ``text`` (notifications, screen readers, the fallback), written by
the chat core (``chat.text``) with the same words as the registry's text renderers. User-supplied
strings (names, reasons, descriptions) are escaped, so a server called ``<!channel>`` cannot ping a
channel. Slack's limits (3000 characters a section, 50 blocks a message, 2000 a button value) are
enforced here, with a count of what was left out. Nothing here ever receives a password, except
``reveal_modal``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flexus_ops.core.plans import ActionResult, Plan, PlanItem, Preview, ServerResult
from flexus_ops.registry.outputs import JobOutput, ListServersOutput, ShowServerOutput

from ..chat import text as chat_text
from ..chat.answers import ApprovalItem
from ..chat.verbs import COMMAND, LIST_FILTERS, SCREEN_ROWS

_FILTER_WORDS = {target: word for word, target in LIST_FILTERS.items()}

# Interactive ids. Button values carry only the gate's action id: never a token, never a password.
CONFIRM = "flexus_confirm"
CANCEL = "flexus_cancel"
APPROVE = "flexus_approve"
REJECT = "flexus_reject"
REVEAL = "flexus_reveal"
RESET_MODAL = "flexus_reset_password"
RESET_BLOCKS = ("reason", "source", "password", "password_again")
GENERATE, ENTER = "generate", "enter"

SECTION_CHARS = 3000
MAX_LINES = 20
MAX_BLOCKS = 50

OUTCOME_ICON = {"done": "✅", "failed": "❌", "skipped": "➖", "submitted": "⏳", "unknown": "❓", "not started": "⏸️"}
STATUS_ICON = {
    "succeeded": "✅",
    "partial": "⚠️",
    "failed": "❌",
    "submitted": "⏳",
    "nothing_to_do": "➖",
    "awaiting_approval": "🕒",
    "running": "🔄",
    "stopped": "⏹️",
}


@dataclass(frozen=True)
class Message:
    text: str  # the fallback: notifications, screen readers, clients without blocks
    blocks: list[dict[str, Any]]


@dataclass(frozen=True)
class ApprovalView:
    """What an approval message shows; built from the registry's public view of the action."""

    action_id: str
    title: str
    requester: str  # a mention, or a name for a requester from another surface
    reason: str | None
    plan: Plan
    expires_at: float
    approvers: str  # mentions of the approvers and approver groups


# -- primitives ---------------------------------------------------------------------------------


def esc(text: object) -> str:
    """Slack's mrkdwn escaping: &, < and > are the only control characters."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plain(text: str, limit: int = 75) -> dict[str, Any]:
    return {"type": "plain_text", "text": clip(text, limit), "emoji": True}


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, SECTION_CHARS)}}


def header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": plain(text, 150)}


def context(*parts: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(p, 3000)} for p in parts[:10] if p]}


def when(epoch: float) -> str:
    """A date every reader sees in their own time zone, with a UTC fallback."""
    iso = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(epoch)}^{{date_short_pretty}} {{time}}|{iso}>"


def user(user_id: str) -> str:
    return f"<@{user_id}>"


def confirm_dialog(title: str, text: str, yes: str, no: str = "Back") -> dict[str, Any]:
    """Slack's "are you sure?" dialog: a second look, not a security control (the gate is)."""
    return {
        "title": plain(title, 100),
        "text": {"type": "mrkdwn", "text": clip(text, 300)},
        "confirm": plain(yes, 30),
        "deny": plain(no, 30),
        "style": "danger",
    }


def button(
    text: str, action_id: str, value: str, *, style: str | None = None, confirm: dict[str, Any] | None = None
) -> dict[str, Any]:
    element: dict[str, Any] = {"type": "button", "text": plain(text), "action_id": action_id, "value": value[:2000]}
    if style:
        element["style"] = style
    if confirm:
        element["confirm"] = confirm
    return element


def actions(block_id: str, *elements: dict[str, Any]) -> dict[str, Any]:
    return {"type": "actions", "block_id": block_id[:255], "elements": list(elements)}


def capped(lines: Sequence[str], limit: int = MAX_LINES, total: int | None = None) -> list[str]:
    if len(lines) <= limit and (total is None or total <= len(lines)):
        return list(lines)
    return [*lines[:limit], f"… and {(total or len(lines)) - min(limit, len(lines))} more"]


def lines_section(lines: Sequence[str]) -> dict[str, Any]:
    """Lines in one section, cut at a line boundary if they would pass Slack's size limit."""
    kept: list[str] = []
    size = 0
    for index, line in enumerate(lines):
        if size + len(line) + 1 > SECTION_CHARS - 40:
            kept.append(f"… and {len(lines) - index} more")
            break
        kept.append(line)
        size += len(line) + 1
    return section("\n".join(kept) or " ")


def banner(target: str | None) -> list[dict[str, Any]]:
    """The sandbox says so on every answer, so nobody mistakes it for the real cloud."""
    return [context(f":test_tube: {esc(target)}")] if target else []


def message(text: str, blocks: Iterable[dict[str, Any]], *, formatted: bool = False) -> Message:
    """``text`` is escaped unless it is ``formatted`` mrkdwn we built (Slack formats the fallback text
    too, so an unescaped server name like ``<!channel>`` in it would notify a whole channel)."""
    kept = list(blocks)
    if len(kept) > MAX_BLOCKS:
        kept = [*kept[: MAX_BLOCKS - 1], context(f"… {len(kept) - MAX_BLOCKS + 1} more blocks not shown")]
    return Message(text=clip(text if formatted else esc(text), 3000), blocks=kept)


# -- help and problems --------------------------------------------------------------------------


def help_message(help_text: str, problem: str | None = None) -> Message:
    """``help_text`` is the chat core's (``verbs.help_text``), made from the verb table and the registry."""
    blocks = [section(f":warning: {esc(problem)}")] if problem else []
    blocks.append(section(esc(help_text)))
    return message((problem + "\n" if problem else "") + help_text, blocks)


def problem_message(text: str) -> Message:
    """``text`` is ours (a parser or gate sentence), already safe to show; only mrkdwn-escaped."""
    return message(text, [section(f":warning: {esc(text)}")])


def refusal_message(prefix: str, reason: str) -> Message:
    return message(f"{prefix}: {reason}", [section(f":no_entry: *{esc(prefix)}:* {esc(reason)}")])


# -- reads --------------------------------------------------------------------------------------


def list_message(out: ListServersOutput, arguments: dict[str, Any], target: str | None) -> Message:
    rows = [chat_text.server_row(s) for s in out.servers[:SCREEN_ROWS]]
    filters = " ".join(f"{_FILTER_WORDS.get(k, k)}={v}" for k, v in arguments.items() if k not in ("limit", "page"))
    title = f"{out.count} server(s)" + (f" matching `{esc(filters)}`" if filters else "")
    blocks = [section(f"*{title}*")]
    if rows:
        name_w = min(max(len(r[0]) for r in rows), 28)
        status_w = min(max(len(r[1]) for r in rows), 24)
        table = [f"{'NAME':<{name_w}}  {'STATUS':<{status_w}}  IP"]
        table += [f"{clip(n, name_w):<{name_w}}  {clip(s, status_w):<{status_w}}  {ip}" for n, s, ip in rows]
        body = "\n".join(table)
        while len(body) > SECTION_CHARS - 10:  # very long IP lists: drop rows, they are counted below
            table.pop()
            body = "\n".join(table)
        blocks.append(section(f"```{esc(body)}```"))
        shown = len(table) - 1
        first = (out.page - 1) * SCREEN_ROWS
        if out.count > first + shown:
            more = out.count - first - shown
            hint = f"`{COMMAND} list {esc(filters) + ' ' if filters else ''}page={out.page + 1}`"
            blocks.append(context(f"Showing {first + 1}-{first + shown} of {out.count}; {more} more: {hint}"))
    blocks += banner(target)
    lines = [f"{title}:"] + [f"{n}  {s}  {ip}" for n, s, ip in rows]
    return message("\n".join(lines), blocks)


def server_message(out: ShowServerOutput, target: str | None) -> Message:
    s = out.server
    fields = [
        ("Status", chat_text.status(s)),
        ("IP", chat_text.ips(s)),
        ("Flavor", s.get("flavor") or "-"),
        ("Zone", s.get("az") or "-"),
        ("Tags", ", ".join(s.get("tags", [])) or "-"),
        ("ID", s.get("id", "?")),
    ]
    block = section(f"*{esc(s.get('name') or s.get('id'))}*")
    block["fields"] = [{"type": "mrkdwn", "text": clip(f"*{k}*\n{esc(v)}", 2000)} for k, v in fields]
    return message(chat_text.server_line(s), [block, *banner(target)])


def job_message(out: JobOutput, target: str | None) -> Message:
    failed = [s for s in out.servers if s.get("status") == "FAIL"]
    head = f"*Job `{esc(out.job_id)}`: {esc(out.status)}*, {len(out.servers)} server(s)"
    if failed:
        head += f", {len(failed)} failed"
    lines = []
    for s in out.servers:
        icon = {"SUCCESS": "✅", "FAIL": "❌"}.get(str(s.get("status")), "⏳")
        reason = " ".join(str(p) for p in (s.get("error_code"), s.get("fail_reason")) if p)
        lines.append(
            f"{icon} `{esc(s.get('server_id'))}` {esc(s.get('status'))}" + (f": {esc(reason)}" if reason else "")
        )
    blocks = [section(head)]
    if lines:
        blocks.append(lines_section(capped(lines)))
    if out.fail_reason:
        blocks.append(context(f"Reason: {esc(out.fail_reason)}"))
    return message(chat_text.job_line(out), [*blocks, *banner(target)])


# -- previews, progress, results ----------------------------------------------------------------


def _target_name(item: PlanItem | ServerResult) -> str:
    return esc(item.name or item.server_id)


def plan_lines(plan: Plan) -> list[str]:
    lines = []
    for item in plan.items:
        state = esc(item.status or "?") + (f" ({esc(item.task)})" if item.task else "")
        mark = "•" if item.act else "◦"
        lines.append(f"{mark} *{_target_name(item)}* `{state}` → {esc(item.note)}")
    return capped(lines)


def change_lines(plan: Plan) -> list[str]:
    lines = []
    for name, change in plan.changes.items():
        if name == "reason":
            continue  # shown on its own line where it matters
        label = name.replace("_", " ")
        if isinstance(change, dict):
            lines.append(f"*{esc(label)}*: `{esc(change.get('from'))}` → `{esc(change.get('to'))}`")
        else:
            lines.append(f"*{esc(label)}*: {esc(change)}")
    return lines


def _sentence(summary: str) -> str:
    return summary[:1].upper() + summary[1:]


def can_confirm(preview: Preview) -> bool:
    """The gate says whether the plan can run: something to act on, and (for approvals) an approver."""
    return preview.runnable


def preview_message(
    preview: Preview, *, title: str, approvers: str | None, target: str | None, reason: str | None = None
) -> Message:
    plan = preview.plan
    blocks = [
        header(f"Preview: {title}"),
        section(f"*{esc(_sentence(plan.summary))}*. Nothing has changed yet."),
        lines_section(plan_lines(plan)),
    ]
    changes = change_lines(plan)
    if reason:
        changes.append(f"*reason*: {esc(reason)}")
    if changes:
        blocks.append(section("\n".join(changes)))
    expires = preview.expires_at
    try:
        expiry = when(datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp())
    except ValueError:
        expiry = esc(expires)
    notes = [f"Only you see this and only you can confirm it. It expires {expiry}."]
    if preview.needs_approval and approvers:
        notes.append(f"After you confirm, one of {approvers} must approve it before anything runs.")
    if can_confirm(preview):
        acting = ", ".join(i.name or i.server_id for i in plan.acting[:10])
        more = f" and {len(plan.acting) - 10} more" if len(plan.acting) > 10 else ""
        yes = "Request approval" if preview.needs_approval else "Confirm"
        dialog = confirm_dialog(
            f"{title}?",
            f"{esc(_sentence(plan.summary))}: {esc(acting)}{more}.",
            "Send request" if preview.needs_approval else "Yes, run it",
        )
        blocks.append(
            actions(
                f"preview:{preview.action_id}",
                button(yes, CONFIRM, preview.action_id, style="danger", confirm=dialog),
                button("Cancel", CANCEL, preview.action_id),
            )
        )
    else:
        notes.insert(0, esc(preview.next_step))
    blocks += [context(*notes), *banner(target)]
    return message(chat_text.preview_text(plan), blocks)


def progress_message(title: str, done: float, total: float | None, note: str, by: str) -> Message:
    """``by`` says who set it going, e.g. "confirmed by <@U1>" or "approved by <@U2>"."""
    if total:
        filled = max(0, min(10, int(10 * done / total)))
        bar = "▰" * filled + "▱" * (10 - filled)
        status = f"{bar} {chat_text.done_of(done, total)}"
    else:
        status = esc(note) or "working…"
    return message(
        chat_text.progress_line(title, note),
        [section(f"⏳ *{esc(title)}*, {by}\n{status}"), context(esc(note))],
    )


def outcome_lines(servers: Sequence[ServerResult]) -> list[str]:
    lines = []
    for o in servers:
        detail = f": {esc(o.detail)}" if o.detail else ""
        lines.append(f"{OUTCOME_ICON.get(o.outcome, '•')} *{_target_name(o)}* {o.outcome}{detail}")
    return capped(lines)


def result_message(title: str, result: ActionResult, by: str, note: str | None = None) -> Message:
    icon = STATUS_ICON.get(result.status, "•")
    blocks = [section(f"{icon} *{esc(title)}*: {chat_text.counts(result.servers)}")]
    if result.rollout is not None:
        waves = result.rollout.waves
        done = sum(w.state in ("done", "failed") for w in waves)
        line = f"Waves: {done} of {len(waves)} finished"
        if result.rollout.stopped:
            line += f". {esc(result.rollout.stopped)}"
        blocks.append(section(line))
    if result.servers:
        blocks.append(lines_section(outcome_lines(result.servers)))
    if result.resume is not None:
        left = len(result.resume.arguments.get("servers", []))
        blocks.append(context(f"{left} server(s) not started: run the command again naming them for a new preview"))
    footer = [f"Confirmed by {by}"]
    if result.job_ids:
        footer.append("jobs: " + ", ".join(f"`{esc(j)}`" for j in result.job_ids[:10]))
    if note:
        footer.append(note)
    blocks.append(context(" · ".join(footer)))
    return message(chat_text.result_line(title, result), blocks)


def notice_message(icon: str, text: str) -> Message:
    """A closing line that replaces a preview or a request: expired, cancelled, sent for approval."""
    return message(text, [section(f"{icon} {text}")], formatted=True)


# -- approvals ----------------------------------------------------------------------------------


def approval_request_message(view: ApprovalView) -> Message:
    plan = view.plan
    details = change_lines(plan)
    blocks = [
        header(f"Approval needed: {view.title}"),
        section(f"{view.requester} asks to *{esc(plan.summary)}*."),
        section(f"*Reason:* {esc(view.reason or '(none given)')}"),
        lines_section(plan_lines(plan)),
    ]
    if details:
        blocks.append(section("\n".join(details)))
    blocks.append(
        context(f"Expires {when(view.expires_at)}. Approvers: {view.approvers}. The requester cannot approve.")
    )
    blocks.append(
        actions(
            f"approval:{view.action_id}",
            button(
                "Approve",
                APPROVE,
                view.action_id,
                style="primary",
                confirm=confirm_dialog("Approve and run it?", f"{esc(_sentence(plan.summary))}.", "Approve"),
            ),
            button("Reject", REJECT, view.action_id, style="danger"),
        )
    )
    return message(f"Approval needed: {view.title}: {plan.summary} (reason: {view.reason})", blocks)


def approval_decided_message(view: ApprovalView, outcome: str, result: ActionResult | None = None) -> Message:
    """The request with its buttons replaced by the decision (and the per-server result, if it ran)."""
    blocks = [
        header(f"{view.title}: decided"),
        section(f"{view.requester} asked to *{esc(view.plan.summary)}*.\n*Reason:* {esc(view.reason or '(none)')}"),
        section(outcome),
    ]
    if result is not None and result.servers:
        blocks.append(lines_section(outcome_lines(result.servers)))
    return message(f"{esc(view.title)}: {outcome}", blocks, formatted=True)


def approvals_list_message(items: Sequence[ApprovalItem], mentions: dict[str, str], can_approve: bool) -> Message:
    """``mentions`` turns a requester's person id into a mention; anyone else is shown by id."""
    if not items:
        return message(chat_text.approvals_line(0), [section(chat_text.approvals_line(0))])
    blocks: list[dict[str, Any]] = [section(f"*{chat_text.approvals_line(len(items))}*")]
    for item in items[:12]:
        who = mentions.get(item.requested_by, esc(item.requested_by))
        blocks.append(
            section(
                f"*{esc(item.title)}* by {who}"
                f"{' (yours)' if item.yours else ''}, expires {when(item.expires_at)}\n"
                f"*Servers:* {esc(', '.join(item.servers[:20]))}\n*Reason:* {esc(item.reason or '(none)')}"
            )
        )
        if item.yours:
            blocks.append(actions(f"mine:{item.action_id}", button("Withdraw", REJECT, item.action_id)))
        elif can_approve:
            blocks.append(
                actions(
                    f"list:{item.action_id}",
                    button(
                        "Approve",
                        APPROVE,
                        item.action_id,
                        style="primary",
                        confirm=confirm_dialog("Approve and run it?", "It runs as soon as you approve.", "Approve"),
                    ),
                    button("Reject", REJECT, item.action_id, style="danger"),
                )
            )
    if len(items) > 12:
        blocks.append(context(f"… and {len(items) - 12} more"))
    return message(chat_text.approvals_line(len(items)), blocks)


# -- modals -------------------------------------------------------------------------------------


def _input(
    block_id: str, label: str, element: dict[str, Any], *, optional: bool = False, hint: str | None = None
) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "input",
        "block_id": block_id,
        "label": plain(label, 2000),
        "element": element,
        "optional": optional,
    }
    if hint:
        block["hint"] = plain(hint, 2000)
    return block


def reset_modal(servers: Sequence[str], metadata: str) -> dict[str, Any]:
    """The request form. ``metadata`` holds the servers and where to answer: never a password."""
    options = [
        {"text": plain("Generate a strong one (shown once, only to me)"), "value": GENERATE},
        {"text": plain("I will enter one"), "value": ENTER},
    ]
    return {
        "type": "modal",
        "callback_id": RESET_MODAL,
        "private_metadata": metadata,
        "title": plain("Reset password", 24),
        "submit": plain("Preview", 24),
        "close": plain("Cancel", 24),
        "blocks": [
            section(
                f"*Servers:* {esc(', '.join(servers))}\nYou will see a preview first. After you confirm it, an "
                "approver must approve the reset before anything changes."
            ),
            _input(
                "reason",
                "Reason (shown to the approver)",
                {"type": "plain_text_input", "action_id": "value", "min_length": 3, "max_length": 200},
            ),
            _input(
                "source",
                "New password",
                {"type": "radio_buttons", "action_id": "value", "options": options, "initial_option": options[0]},
            ),
            _input(
                "password",
                "Password (only if you enter one)",
                {"type": "plain_text_input", "action_id": "value", "max_length": 64},
                optional=True,
                hint="8-26 characters with three of: upper case, lower case, digits, specials !@%-_=+[]:./? "
                "It must not contain root or administrator.",
            ),
            _input(
                "password_again",
                "Password again",
                {"type": "plain_text_input", "action_id": "value", "max_length": 64},
                optional=True,
            ),
            context(
                "Slack has no hidden input, so the password is visible on your screen while you type. It is never "
                "posted in a channel, written to a log or the audit; it is kept encrypted until the reset runs."
            ),
        ],
    }


def reveal_modal(password: str, servers: str) -> dict[str, Any]:
    """The one place a generated password is shown: a modal only its requester sees, kept in no history."""
    return {
        "type": "modal",
        "title": plain("New password", 24),
        "close": plain("Done", 24),
        "blocks": [
            section(f"The new password for {esc(servers)}:"),
            section(f"```{esc(password)}```"),
            context(
                "Shown once: copy it now. It is not stored anywhere and cannot be shown again. It takes effect "
                "after each server's next start or reboot."
            ),
        ],
    }
