"""Threat: a confirmation used twice (a replayed request, a retried click, a raced token) runs a change twice.

Every confirmation names one pending action and is consumed with it by one compare-and-set. Used again by
the same person it returns the recorded outcome marked as a replay; by anyone else it is refused; in no
case does anything run a second time, after a restart, on another replica, or with ten replays racing."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import ElicitResult

from flexus_ops.cloud.client import FlexusClient
from flexus_ops.core.errors import Refused
from flexus_ops.gate.secrets import Keys
from flexus_ops.gate.store import Store
from flexus_ops.mcp_server import build_server
from flexus_ops.registry.registry import Registry
from tests.gatekit import ALICE, ALICE_SLACK, DAVE, make_registry, sandbox_of, servers_with, team_policy, writes
from tests.security.httpkit import HOST, OPERATOR_SECRET, SECOND_OPERATOR_SECRET, parse_response, post, served, team


class Person:
    """Answers every confirmation with yes, remembering the questions."""

    def __init__(self) -> None:
        self.questions: list[str] = []

    async def __call__(self, _ctx: Any, params: Any) -> ElicitResult:
        self.questions.append(params.message)
        return ElicitResult(action="accept", content={"confirm": True})


class Recorder:
    """Keeps every request the MCP client sends, so a test can replay one byte for byte."""

    def __init__(self) -> None:
        self.requests: list[tuple[list[tuple[str, str]], bytes]] = []

    async def __call__(self, request: httpx2.Request) -> None:
        self.requests.append((request.headers.multi_items(), request.content))

    def first_call(self) -> dict[str, Any]:
        """The first tools/call, the one that got the question (no inputResponses yet)."""
        for _headers, content in self.requests:
            body = json.loads(content) if content else {}
            if body.get("method") == "tools/call" and not body["params"].get("inputResponses"):
                return body
        raise AssertionError("no tools/call was sent")

    def final_answer(self) -> tuple[list[tuple[str, str]], dict[str, Any]]:
        """The last tools/call that carried an elicitation answer (inputResponses + requestState)."""
        for headers, content in reversed(self.requests):
            body = json.loads(content) if content else {}
            if body.get("method") == "tools/call" and body["params"].get("inputResponses"):
                return headers, body
        raise AssertionError("no answered tools/call was sent")


def replica(first: Registry, tmp_path: Path) -> Registry:
    """Another process on the same store and keys (a restart, or a second replica): the same cloud."""
    return Registry(
        settings=first.settings,
        client=FlexusClient(first.settings, sandbox=sandbox_of(first)),
        store=Store(first.store.url, Keys.load(tmp_path).audit),
        policy=first.policy,
        keys=Keys.load(tmp_path),
    )


def replay_headers(headers: list[tuple[str, str]], token: str = OPERATOR_SECRET) -> list[tuple[str, str]]:
    kept = [(k, v) for k, v in headers if k.lower() not in ("content-length", "host", "authorization")]
    return [*kept, ("Authorization", f"Bearer {token}")]


async def stop_with_elicitation(registry: Registry, url: str) -> tuple[Recorder, Person, dict[str, Any]]:
    target = servers_with(registry, "ACTIVE")[0]
    recorder, person = Recorder(), Person()
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {OPERATOR_SECRET}", **HOST}, event_hooks={"request": [recorder]}
    )
    transport = streamable_http_client(url, http_client=http)
    async with Client(transport, mode="auto", elicitation_callback=person) as mcp:
        result = await mcp.call_tool("flexus_stop_servers", {"servers": [target["id"]]})
    assert not result.is_error, result.content
    return recorder, person, result.structured_content or {}


@pytest.fixture
async def registry(tmp_path: Path) -> Any:
    reg = make_registry(tmp_path, team())
    yield reg
    await reg.aclose()


# -- MCP elicitation answers, 2026-07-28 era ---------------------------------------------------


async def test_the_question_names_the_one_pending_action(registry: Registry) -> None:
    with served(registry) as url:
        _recorder, person, first = await stop_with_elicitation(registry, url)
    action_id = first["result"]["action_id"]
    assert len(person.questions) == 1 and f"(preview {action_id})" in person.questions[0]


async def test_a_replayed_answer_returns_the_recorded_outcome_and_runs_nothing(registry: Registry) -> None:
    with served(registry) as url:
        recorder, _person, first = await stop_with_elicitation(registry, url)
        headers, body = recorder.final_answer()
        actions_before = len(registry.store.actions_in(["pending", "succeeded", "submitted", "executing"]))
        replays = [parse_response(await post(url, replay_headers(headers), body)) for _ in range(3)]
    for replayed in replays:
        result = replayed["result"]["structuredContent"]["result"]
        assert result["replay"] is True and result["action_id"] == first["result"]["action_id"]
        assert result["status"] == first["result"]["status"]
    assert len(writes(registry)) == 1, "the stop was sent once"
    # A replay must not even leave a fresh pending action behind (the old bug confirmed exactly that).
    assert len(registry.store.actions_in(["pending", "succeeded", "submitted", "executing"])) == actions_before
    assert [r.event for r in registry.store.audit_records()].count("replayed") == 3


async def test_replays_after_a_restart_and_on_another_replica_run_nothing(registry: Registry, tmp_path: Path) -> None:
    with served(registry) as url:
        recorder, _person, first = await stop_with_elicitation(registry, url)
    headers, body = recorder.final_answer()
    restarted = replica(registry, tmp_path)  # the first server is gone; a new process, same store and keys
    try:
        with served(restarted) as url:
            replayed = parse_response(await post(url, replay_headers(headers), body))
    finally:
        restarted.store.engine.dispose()
    assert replayed["result"]["structuredContent"]["result"]["replay"] is True
    assert len(writes(registry)) == 1
    assert first["result"]["status"] == "succeeded"


async def test_ten_racing_replays_on_two_replicas_run_nothing_more(registry: Registry, tmp_path: Path) -> None:
    second = replica(registry, tmp_path)
    try:
        with served(registry) as url_a, served(second) as url_b:
            recorder, _person, _first = await stop_with_elicitation(registry, url_a)
            headers, body = recorder.final_answer()
            answers = await asyncio.gather(
                *(post(url_a if i % 2 else url_b, replay_headers(headers), body) for i in range(10))
            )
        for answer in answers:
            message = parse_response(answer)
            assert message["result"]["structuredContent"]["result"]["replay"] is True
    finally:
        second.store.engine.dispose()
    assert len(writes(registry)) == 1


async def test_a_replay_by_another_person_is_refused(registry: Registry) -> None:
    with served(registry) as url:
        recorder, _person, _first = await stop_with_elicitation(registry, url)
        headers, body = recorder.final_answer()
        stolen = parse_response(await post(url, replay_headers(headers, SECOND_OPERATOR_SECRET), body))
    # The SDK binds the sealed request state to the verified caller: another person's replay is refused.
    assert "error" in stolen or stolen["result"].get("isError"), stolen
    assert len(writes(registry)) == 1


# -- the older era, in memory: the answer confirms the action it was asked about ----------------


async def test_legacy_era_answer_confirms_the_previewed_action_only(registry: Registry) -> None:
    target = servers_with(registry, "ACTIVE")[0]
    person = Person()
    async with Client(build_server(registry), mode="legacy", elicitation_callback=person) as mcp:
        first = await mcp.call_tool("flexus_reboot_servers", {"servers": [target["id"]]})
    action_id = first.structured_content["result"]["action_id"]  # type: ignore[index]
    assert f"(preview {action_id})" in person.questions[0]
    row = await registry.action(action_id)
    assert row is not None and row.state == "succeeded" and len(writes(registry)) == 1


# -- tokens and buttons -------------------------------------------------------------------------


@pytest.fixture
async def team_registry(tmp_path: Path) -> Any:
    reg = make_registry(tmp_path, team_policy())
    yield reg
    await reg.aclose()


async def test_a_token_is_used_once_whoever_sends_it(team_registry: Registry) -> None:
    registry = team_registry
    targets = [servers_with(registry, "ACTIVE")[0]["id"]]
    preview = await registry.call(ALICE, "flexus_stop_servers", {"servers": targets})
    token = preview.preview.confirmation_token  # type: ignore[attr-defined]
    args = {"servers": targets, "confirmation_token": token}
    await registry.call(ALICE, "flexus_stop_servers", args)
    again = await registry.call(ALICE_SLACK, "flexus_stop_servers", args)  # the same person, another surface
    assert again.result.replay is True  # type: ignore[attr-defined]
    with pytest.raises(Refused, match="another person"):
        await registry.call(DAVE, "flexus_stop_servers", args)
    assert len(writes(registry)) == 1
    refused = [r for r in registry.store.audit_records() if r.event == "confirm_refused"]
    assert [(r.person, r.action_id) for r in refused] == [("dave", preview.preview.action_id)]  # type: ignore[attr-defined]


async def test_confirming_someone_elses_open_preview_is_refused_and_audited(team_registry: Registry) -> None:
    registry = team_registry
    targets = [servers_with(registry, "ACTIVE")[0]["id"]]
    preview = await registry.call(ALICE, "flexus_stop_servers", {"servers": targets})
    action_id = preview.preview.action_id  # type: ignore[attr-defined]
    token = preview.preview.confirmation_token  # type: ignore[attr-defined]
    with pytest.raises(Refused, match="another person"):
        await registry.confirm_action(DAVE, action_id)  # a click on Alice's buttons
    with pytest.raises(Refused, match="another person"):
        await registry.call(DAVE, "flexus_stop_servers", {"servers": targets, "confirmation_token": token})
    assert writes(registry) == []
    refused = [r for r in registry.store.audit_records() if r.event == "confirm_refused"]
    assert [(r.person, r.action_id) for r in refused] == [("dave", action_id)] * 2


async def test_ten_racing_button_clicks_run_once(team_registry: Registry) -> None:
    registry = team_registry
    targets = [servers_with(registry, "ACTIVE")[0]["id"]]
    preview = await registry.call(ALICE_SLACK, "flexus_stop_servers", {"servers": targets})
    action_id = preview.preview.action_id  # type: ignore[attr-defined]
    clicks = await asyncio.gather(
        *(registry.confirm_action(ALICE_SLACK, action_id) for _ in range(10)), return_exceptions=True
    )
    ran = [c for c in clicks if not isinstance(c, Exception) and not c.replay]
    assert len(ran) == 1 and len(writes(registry)) == 1
    assert all("already" in str(c) for c in clicks if isinstance(c, Exception))
    # Every click is in the audit log: the one that ran, and each that lost or came after as a replay.
    events = [r.event for r in registry.store.audit_records() if r.action_id == action_id]
    assert events.count("confirmed") == 1
    assert events.count("replay_refused") + events.count("replayed") == 9
    late = await registry.confirm_action(ALICE_SLACK, action_id)
    assert late.replay is True and late.status == ran[0].status


async def answer_rounds(
    registry: Registry, url: str, server_id: str
) -> tuple[list[tuple[str, str]], dict[str, Any], dict[str, Any]]:
    """Round one by hand for ``server_id`` (after learning the wire shapes from one normal exchange):
    the headers, and the round-two body that answers "yes" to the question it got, not yet sent."""
    recorder, _person, _first = await stop_with_elicitation(registry, url)
    headers, final = recorder.final_answer()
    first = copy.deepcopy(recorder.first_call())
    first["params"]["arguments"]["servers"] = [server_id]
    asked = parse_response(await post(url, replay_headers(headers), first))["result"]
    assert "inputRequests" in asked, asked
    answer = copy.deepcopy(final)
    answer["params"]["arguments"]["servers"] = [server_id]
    answer["params"]["requestState"] = asked["requestState"]
    return headers, answer, asked


async def test_ten_copies_of_the_first_answer_at_once_run_it_once_and_ask_nothing_new(registry: Registry) -> None:
    target = servers_with(registry, "ACTIVE")[1]["id"]
    with served(registry) as url:
        headers, answer, _asked = await answer_rounds(registry, url, target)
        replies = await asyncio.gather(*(post(url, replay_headers(headers), answer) for _ in range(10)))
    results = [parse_response(reply)["result"] for reply in replies]
    # The old race: a copy that looked before the winner committed got a *new* question for a new preview.
    assert not [r for r in results if "inputRequests" in r], "a copy of the answer was asked a new question"
    ran = [r for r in results if not r.get("isError") and not r["structuredContent"]["result"].get("replay")]
    refused = [r for r in results if r.get("isError")]
    assert len(ran) == 1
    assert all("already" in r["content"][0]["text"] for r in refused)
    assert [w.server_ids for w in writes(registry)][-1] == [target] and len(writes(registry)) == 2


async def test_a_declined_question_cannot_be_answered_yes_later(registry: Registry) -> None:
    target = servers_with(registry, "ACTIVE")[1]["id"]
    with served(registry) as url:
        headers, answer, _asked = await answer_rounds(registry, url, target)
        (key,) = answer["params"]["inputResponses"]
        declined = copy.deepcopy(answer)
        declined["params"]["inputResponses"][key] = {"action": "decline"}
        no = parse_response(await post(url, replay_headers(headers), declined))["result"]
        later = parse_response(await post(url, replay_headers(headers), answer))["result"]
    assert no.get("isError") and "declined" in no["content"][0]["text"]
    # The "yes" meets a closed preview: it is asked afresh (or refused), never run.
    assert "inputRequests" in later or later.get("isError"), later
    assert len(writes(registry)) == 1, "only the exchange that taught the wire shapes ran"
