"""MCP prompts: runbooks an operator picks from the client's menu ("rolling reboot of a tier", ...).

Each is a message that walks the assistant through the tools, in the order an experienced on-call engineer
would use them. A runbook is offered only if every tool it names is offered (read-only mode drops the ones
that change servers), so a menu never suggests something the server would refuse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.prompts.base import Prompt

from .registry.registry import Registry


def _selection(tag: str, name_prefix: str) -> str:
    parts = []
    if tag:
        parts.append(f'"tag": "{tag}"')
    if name_prefix:
        parts.append(f'"name": "{name_prefix}"')
    return "{" + ", ".join(parts) + "}"


def rolling_reboot(tag: str = "", name_prefix: str = "", wave_size: str = "10", reboot_type: str = "SOFT") -> str:
    """Reboot a tier in waves, stopping at the first wave that fails."""
    select = _selection(tag, name_prefix)
    return (
        f"Reboot the servers matching {select} in waves of {wave_size}, {reboot_type} reboot.\n"
        "1. Call flexus_list_servers with the same filters and tell me how many servers match and which are "
        "not ACTIVE (they will be skipped).\n"
        f'2. Call flexus_reboot_servers with "select": {select}, "type": "{reboot_type}" and "waves": '
        f'{{"size": {wave_size}, "pause_seconds": 30, "stop_on_failure": true}}. It returns a preview: show me '
        "the waves, the skipped servers with their reasons, and whether a second person must approve.\n"
        "3. Only after I confirm that exact plan, confirm it. Do not enumerate server names yourself: the "
        "selection is re-checked at confirmation, and a fleet that changed is refused with the difference.\n"
        "4. Follow the rollout with flexus_show_action until it ends, reporting each wave as it finishes. If a "
        "wave fails, the rest is not sent: show the failed servers (flexus_show_server) and stop there."
    )


def rotate_root_passwords(reason: str, tag: str = "", name_prefix: str = "") -> str:
    """Reset the root (or Administrator) password of a set of servers, with a second person's approval."""
    select = _selection(tag, name_prefix)
    return (
        f"Rotate the root passwords of the servers matching {select}. Reason: {reason}\n"
        f'1. Call flexus_reset_servers_password with "select": {select} and "reason": "{reason}", without '
        "new_password: flexus-ops generates one per the cloud's rules and has the cloud check it first.\n"
        "2. Show me the preview (which servers, any skipped and why) and who may approve it.\n"
        "3. After I confirm, tell me that an approver must approve it (flexus-ops approvals approve <id>, or "
        "the Slack button), and that only I can reveal the new password, once, with "
        "flexus-ops approvals reveal <id>. Never ask for, repeat or store a password in this conversation.\n"
        "4. Check the outcome with flexus_show_action."
    )


def diagnose_start_failure(server: str) -> str:
    """Find out why a server will not start, before trying anything."""
    return (
        f"Server {server} will not start. Find out why before changing anything.\n"
        f'1. Call flexus_show_server with "server": "{server}" and "full": true. Look at: status (ERROR or '
        "SHUTOFF), task_state (a task in progress means busy: wait), locked, the frozen state and billing mode "
        "(a frozen or unpaid prepaid server cannot start), and fault.\n"
        "2. If a recent change touched it, call flexus_show_action / flexus_show_job for that change and read "
        "each server's error code and reason.\n"
        "3. Tell me the most likely cause in one sentence, with the evidence. Only if the server is SHUTOFF and "
        "nothing blocks it, offer to preview flexus_start_servers for it, and wait for my confirmation."
    )


@dataclass(frozen=True)
class Runbook:
    function: Callable[..., str]
    title: str
    tools: frozenset[str]


RUNBOOKS = (
    Runbook(
        rolling_reboot,
        "Rolling reboot of a tier",
        frozenset({"flexus_list_servers", "flexus_reboot_servers", "flexus_show_action", "flexus_show_server"}),
    ),
    Runbook(
        rotate_root_passwords,
        "Rotate root passwords (with approval)",
        frozenset({"flexus_reset_servers_password", "flexus_show_action"}),
    ),
    Runbook(
        diagnose_start_failure,
        "Why will this server not start?",
        frozenset({"flexus_show_server", "flexus_show_job"}),
    ),
)


def add_prompts(server: MCPServer, registry: Registry) -> None:
    known = set(registry.specs)
    for runbook in RUNBOOKS:  # a runbook naming a tool that does not exist is a bug, not a policy choice
        assert runbook.tools <= known, f"{runbook.function.__name__} names unknown tools {runbook.tools - known}"
    offered = {spec.name for spec in registry.tools()}
    for runbook in RUNBOOKS:
        if runbook.tools <= offered:
            server.add_prompt(Prompt.from_function(runbook.function, title=runbook.title))
