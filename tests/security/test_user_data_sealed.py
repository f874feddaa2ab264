"""Threat: user data is a boot script, and boot scripts carry secrets (a database password, an API key,
a join token). Between its preview and its execution an update's arguments wait in the store, where
anyone who can read the database (a backup, a replica's operator) would read the script. User data is
kept sealed there, as a password is, and only the cloud receives it."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import pytest

from flexus_ops.core.errors import Refused
from flexus_ops.registry.registry import Registry
from tests.gatekit import ALICE, everything_written, make_registry, sandbox_of, servers_with

SCRIPT_SECRET = "db_password=Sealed-UserData-Secret-42"
USER_DATA = base64.b64encode(f"#!/bin/sh\necho '{SCRIPT_SECRET}' > /etc/app.env\n".encode()).decode()


@pytest.fixture
async def registry(tmp_path: Path) -> Any:
    reg = make_registry(tmp_path)
    yield reg
    await reg.aclose()


def assert_not_kept(text: str) -> None:
    assert USER_DATA not in text and SCRIPT_SECRET not in text


async def test_user_data_waits_sealed_and_reaches_only_the_cloud(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    server = servers_with(registry, "ACTIVE")[0]["id"]
    args = {"server": server, "user_data": USER_DATA}
    with caplog.at_level(logging.DEBUG):
        preview = await registry.call(ALICE, "flexus_update_server", args)
        assert_not_kept(everything_written(registry))
        assert_not_kept(preview.model_dump_json())
        (action,) = registry.store.actions_in(["pending"])
        shown = await registry.call(ALICE, "flexus_show_action", {"action_id": action["id"]})
        assert_not_kept(shown.model_dump_json())

        token = preview.preview.confirmation_token
        done = await registry.call(ALICE, "flexus_update_server", {**args, "confirmation_token": token})
    assert done.result is not None and done.result.status == "succeeded"
    assert sandbox_of(registry).backend.servers[server].user_data == USER_DATA  # what was sent is the script
    assert_not_kept(everything_written(registry))
    assert registry.store.get_action(action["id"])["secret"] is None  # type: ignore[index]
    assert_not_kept(caplog.text)


async def test_a_different_script_does_not_confirm_a_preview(registry: Registry) -> None:
    """The confirmation stays bound to the very script previewed, though the store keeps only its seal."""
    server = servers_with(registry, "ACTIVE")[0]["id"]
    preview = await registry.call(ALICE, "flexus_update_server", {"server": server, "user_data": USER_DATA})
    other = base64.b64encode(b"#!/bin/sh\necho other\n").decode()
    token = preview.preview.confirmation_token
    changed = {"server": server, "user_data": other, "confirmation_token": token}
    with pytest.raises(Refused, match="the arguments differ from the previewed ones"):
        await registry.call(ALICE, "flexus_update_server", changed)
    assert sandbox_of(registry).backend.servers[server].user_data != other


def test_sealing_user_data_does_not_make_chat_ask_for_a_secret(registry: Registry) -> None:
    """Chat never takes user data, so a rename or a description stays a plain preview: no private form, no
    password-like-word guard, no offer to reveal a generated secret after it ran."""
    from bots.chat.parse import ChangeRequest, parse

    assert {name for name, spec in registry.specs.items() if spec.asks_for_secret} == {"flexus_reset_servers_password"}
    assert registry.specs["flexus_update_server"].secret_fields == {"user_data"}
    request = parse("rename web-01 Web-Node_07.x", registry.specs)
    assert request == ChangeRequest("flexus_update_server", {"server": "web-01", "name": "Web-Node_07.x"}, "rename")


async def test_a_full_record_shows_user_data_as_its_size_and_hash(registry: Registry) -> None:
    """What the cloud holds is read back by show and list with full=true: a tool result lands in an AI
    assistant's context, so the script is shown as its size and hash, never as text."""
    server = servers_with(registry, "ACTIVE")[0]["id"]
    args = {"server": server, "user_data": USER_DATA}
    preview = await registry.call(ALICE, "flexus_update_server", args)
    await registry.call(
        ALICE, "flexus_update_server", {**args, "confirmation_token": preview.preview.confirmation_token}
    )
    shown = await registry.call(ALICE, "flexus_show_server", {"server": server, "full": True})
    listed = await registry.call(ALICE, "flexus_list_servers", {"full": True, "limit": 1000})
    for result in (shown, listed):
        assert_not_kept(result.model_dump_json())
    hidden = shown.server["OS-EXT-SRV-ATTR:user_data"]
    assert hidden.startswith(f"hidden: {len(USER_DATA)} base64 characters, sha256 ")
