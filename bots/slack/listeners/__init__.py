"""The Slack listeners, grouped by kind as in bolt's starter template: ``commands`` (the ``/flexus`` slash
command), ``actions`` (button clicks) and ``views`` (modal submissions). Every one acks first."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from ..context import BotContext
from . import actions, commands, views


def register(app: AsyncApp, ctx: BotContext) -> None:
    commands.register(app, ctx)
    actions.register(app, ctx)
    views.register(app, ctx)
