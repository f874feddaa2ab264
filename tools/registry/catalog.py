"""The tools: one definition per documented Flexus L operation. Nothing is hand-written per tool in any
surface; MCP, Slack and the CLI are generated from the specs here.

Descriptions are written for a language model and kept short: the whole catalog rides along on
every turn of a conversation.
"""

from __future__ import annotations

from ..core.tools import ToolSpec
from .families import actions, password, power, reads, update

TOOLS: tuple[ToolSpec, ...] = (
    reads.LIST_SERVERS,
    reads.SHOW_SERVER,
    power.START,
    power.STOP,
    power.REBOOT,
    password.RESET_PASSWORD,
    update.UPDATE_SERVER,
    reads.SHOW_JOB,
    actions.SHOW_ACTION,
)
"""In the order clients list them."""
