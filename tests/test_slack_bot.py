"""The Slack bot over its real HTTP endpoint: signed slash commands, button clicks and modal submissions,
a real Registry on the embedded sandbox, and a local fake of Slack's Web API that records every call.
Nothing of ours is mocked; the gate decides, the tests check what people would see and what ran."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flexus_ops.bots.slack.app import WEB_API_SCOPES, SlackBot
from flexus_ops.bots.slack.blocks import APPROVE, CANCEL, CONFIRM, REJECT, REVEAL
from flexus_ops.bots.slack.logs import REDACTED
from flexus_ops.bots.slack.worker import AnswerWorker
from flexus_ops.cloud.client import FlexusClient
from flexus_ops.cloud.rules import problem_with_password
from flexus_ops.core.tools import Caller
from flexus_ops.gate.secrets import Keys
from flexus_ops.gate.store import Store
from flexus_ops.registry.registry import Registry
from tests.gatekit import everything_written, sandbox_of, servers_with, writes
from tests.slackkit import (
    ALICE,
    APPROVALS_CHANNEL,
    APPROVER_GROUP,
    BOB,
    CAROL,
    DAVE,
    ERIN,
    MALLORY,
    OTHER_CHANNEL,
    OTHER_TEAM,
    SLACK,
    Call,
    Rig,
    buttons,
    reset_values,
    rig,
    serve,
    slack_policy,
    wait_until,
)

RESET_PASSWORD = "Slack-Reset-pass7"
WEAK_PASSWORD = "weakpassword"


@pytest.fixture
def bot(tmp_path: Path) -> Iterator[Rig]:
    with rig(tmp_path, watch_interval=0.1) as running:
        yield running


def names(registry: Registry, status: str, n: int) -> list[str]:
    found = [s["name"] for s in servers_with(registry, status) if s["name"].isascii()]
    unique = [name for name in found if found.count(name) == 1]
    assert len(unique) >= n
    return unique[:n]


def is_final(call: Call) -> bool:
    return "Confirmed by" in call.text or "expired" in call.text or "Cancelled" in call.text


def resets(registry: Registry) -> list[Any]:
    return [w for w in writes(registry) if w.operation == "BatchResetServersPassword"]


def in_parallel(*work: Callable[[], Any]) -> list[Any]:
    """Start every request at the same moment, as two people (or two browser tabs) would."""
    results: list[Any] = [None] * len(work)
    start = threading.Barrier(len(work))

    def run(index: int) -> None:
        start.wait()
        results[index] = work[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


# -- signatures -----------------------------------------------------------------------------------


def test_forged_and_replayed_requests_get_401(bot: Rig) -> None:
    target = names(bot.registry, "ACTIVE", 1)[0]
    body, url = bot.slack.command_body(ALICE, f"stop {target}")
    assert bot.slack.post(body, secret="not-the-signing-secret").status_code == 401
    assert bot.slack.post(body, timestamp=int(time.time()) - 301).status_code == 401  # outside the 5 minutes
    assert bot.slack.post(body, timestamp=int(time.time()) + 301).status_code == 401
    tampered = body.replace("stop", "start")
    headers = {"x-slack-request-timestamp": str(int(time.time())), "x-slack-signature": "v0=" + "0" * 64}
    assert (
        bot.slack.http.post(f"{bot.slack.bot_url}/slack/events", content=tampered, headers=headers).status_code == 401
    )
    assert bot.slack.http.post(f"{bot.slack.bot_url}/slack/events", content=body).status_code == 401
    click, _ = bot.slack.click_body(ALICE, CONFIRM, "0" * 32)
    assert bot.slack.post(click, secret="forged").status_code == 401
    assert bot.fake.at(url) == [] and bot.fake.snapshot() == []  # nothing was run, nothing was answered
    assert sandbox_of(bot.registry).request_log == []

    # Within the window the same signed request is genuine (Slack retries): 200, and only a preview.
    assert bot.slack.post(body, timestamp=int(time.time()) - 200).status_code == 200
    bot.fake.wait_at(url)
    assert writes(bot.registry) == []


# -- reads ----------------------------------------------------------------------------------------


def test_a_read_is_acked_before_the_cloud_answers_then_shown_privately(bot: Rig) -> None:
    knobs = sandbox_of(bot.registry).knobs
    knobs.hang_seconds, knobs.hang_next = 1.0, 1  # the cloud is slow: its answer takes a second
    response, url = bot.slack.command(ALICE, "list status=ACTIVE")
    assert response.status_code == 200 and response.text == ""
    assert bot.fake.at(url) == []  # the ack came back while the cloud was still working
    (answer,) = bot.fake.wait_at(url)
    assert answer.body["response_type"] == "ephemeral"
    active = servers_with(bot.registry, "ACTIVE") + servers_with(bot.registry, "ACTIVE", locked=True)
    assert f"{len(active)} server(s)" in answer.text and "NAME" in answer.text and "STATUS" in answer.text
    assert len(active) > 20 and f"{len(active) - 20} more" in answer.text and "page=2" in answer.text
    assert "SANDBOX" in answer.text  # nobody mistakes the sandbox for the real cloud


def test_share_posts_in_the_channel_and_errors_stay_private(bot: Rig) -> None:
    target = names(bot.registry, "ACTIVE", 1)[0]
    response, url = bot.slack.command(BOB, f"show {target} --share")
    assert response.status_code == 200
    (answer,) = bot.fake.wait_at(url)
    assert answer.body["response_type"] == "in_channel" and target in answer.text and "Status" in answer.text

    response, url = bot.slack.command(BOB, "show cache-01 --share")  # two servers have this name
    (answer,) = bot.fake.wait_at(url)
    assert answer.body["response_type"] == "ephemeral"
    assert "names 2 servers; use an id" in answer.text and answer.body["text"].count("cache-01 (") == 2

    response, url = bot.slack.command(BOB, "stop no-such-server-01")
    (answer,) = bot.fake.wait_at(url)
    assert "no server named" in answer.text and writes(bot.registry) == []


def test_acks_do_not_wait_for_answers_in_flight(bot: Rig) -> None:
    """Answers run on the answer worker, not where acks are made: while one command's answer waits on a
    slow cloud, other commands and clicks are acked, and each answer lands at its own response_url."""
    knobs = sandbox_of(bot.registry).knobs
    knobs.hang_seconds, knobs.hang_next = 2.0, 1
    slow, slow_url = bot.slack.command(ALICE, "list")
    assert slow.status_code == 200 and slow.text == ""
    quick = [bot.slack.command(ALICE, "list status=ACTIVE") for _ in range(3)]
    clicked, click_url = bot.slack.click(ALICE, CONFIRM, "0" * 32)
    assert [r.status_code for r, _ in quick] == [200, 200, 200] and clicked.status_code == 200
    assert bot.fake.at(slow_url) == []  # every ack above came back while the first answer was still waiting
    for _response, url in quick:
        assert "server(s)" in bot.fake.wait_at(url)[0].text
    assert "no such preview" in bot.fake.wait_at(click_url)[0].text
    assert "server(s)" in bot.fake.wait_at(slow_url)[0].text
    wait_until(lambda: bot.bot.answers_pending == 0, what="no answer pending")


def test_a_full_answer_worker_still_acks_and_says_busy(tmp_path: Path) -> None:
    """Backpressure that still acks: past its bound the worker admits nothing, the ack says so (nothing
    was started, so trying again is safe), and once there is room the same command is answered."""
    with rig(tmp_path, answers=AnswerWorker(running=1, queued=0)) as bot:
        knobs = sandbox_of(bot.registry).knobs
        knobs.hang_seconds, knobs.hang_next = 2.0, 1
        first, first_url = bot.slack.command(ALICE, "list")
        assert first.status_code == 200 and first.text == ""
        busy, busy_url = bot.slack.command(ALICE, "list")
        assert busy.status_code == 200 and "Busy" in busy.text and busy.json()["response_type"] == "ephemeral"
        target = names(bot.registry, "ACTIVE", 1)[0]
        refused, _ = bot.slack.command(ALICE, f"stop {target}")
        assert "Busy" in refused.text
        clicked, click_url = bot.slack.click(ALICE, CONFIRM, "0" * 32)
        assert clicked.status_code == 200 and "Busy" in bot.fake.wait_at(click_url)[0].text
        assert "server(s)" in bot.fake.wait_at(first_url)[0].text
        wait_until(lambda: bot.bot.answers_pending == 0, what="room in the worker")
        again, again_url = bot.slack.command(ALICE, "list")
        assert again.status_code == 200 and again.text == ""
        assert "server(s)" in bot.fake.wait_at(again_url)[0].text
        assert bot.fake.at(busy_url) == [] and writes(bot.registry) == []


def test_help_and_mistakes_are_answered_in_the_ack(bot: Rig) -> None:
    for text, words in (("", "/flexus list"), ("frobnicate", "I don't know"), ("stop", "at least one server")):
        response, _url = bot.slack.command(CAROL, text)
        assert response.status_code == 200
        answer = response.json()
        assert answer["response_type"] == "ephemeral" and words in json.dumps(answer)
    assert [c for c in bot.fake.snapshot() if c.kind == "response_url"] == []


def test_job_and_approvals_read_through_the_registry(bot: Rig) -> None:
    _response, url = bot.slack.command(CAROL, "job 0000000000000000")
    (answer,) = bot.fake.wait_at(url)
    assert "Not done" in answer.text and "404" in answer.text
    _response, url = bot.slack.command(CAROL, "approvals")
    (answer,) = bot.fake.wait_at(url)
    assert "No approval requests are waiting" in answer.text


# -- changes: preview, confirm, cancel ----------------------------------------------------------


def test_preview_then_confirm_runs_once_and_follows_the_job(bot: Rig) -> None:
    targets = names(bot.registry, "ACTIVE", 2)
    action_id, preview = bot.preview(ALICE, f"stop {' '.join(targets)}")
    assert preview.body["response_type"] == "ephemeral" and "Nothing has changed yet" in preview.text
    assert all(f"*{t}* `ACTIVE` → will stop (SOFT)" in preview.text for t in targets)
    confirm = buttons(preview.blocks)[CONFIRM]
    assert confirm["style"] == "danger" and confirm["confirm"]["confirm"]["text"] == "Yes, run it"
    assert buttons(preview.blocks)[CANCEL]["value"] == action_id
    assert writes(bot.registry) == []  # a preview never writes

    response, url = bot.slack.click(ALICE, CONFIRM, action_id)
    assert response.status_code == 200 and response.text == ""
    shown = bot.fake.wait_at(url, final=is_final)
    assert all(c.body["replace_original"] is True for c in shown) and len(shown) <= 5  # response_url: 5 uses
    assert any("of 2 done" in c.text for c in shown[:-1]), "the message follows the job"
    final = shown[-1]
    assert "2 done" in final.text and all(f"*{t}* done" in final.text for t in targets)
    assert "Confirmed by <@UALICE>" in final.text and not buttons(final.blocks)
    assert len(writes(bot.registry)) == 1


def test_a_partial_failure_names_each_server_and_its_reason(bot: Rig) -> None:
    targets = names(bot.registry, "ACTIVE", 2)
    ids = {s["name"]: s["id"] for s in servers_with(bot.registry, "ACTIVE")}
    sandbox_of(bot.registry).knobs.failing_server_ids = {ids[targets[1]]}
    action_id, _ = bot.preview(ALICE, f"reboot --hard {' '.join(targets)}")
    _response, url = bot.slack.click(ALICE, CONFIRM, action_id)
    final = bot.fake.wait_at(url, final=is_final)[-1]
    assert f"*{targets[0]}* done" in final.text
    assert f"*{targets[1]}* failed: Ecs.0000" in final.text and "injected failure" in final.text
    assert "1 done · 1 failed" in final.text


def test_cancel_withdraws_the_preview_and_it_can_no_longer_run(bot: Rig) -> None:
    target = names(bot.registry, "SHUTOFF", 1)[0]
    action_id, _ = bot.preview(ALICE, f"start {target}")
    _response, url = bot.slack.click(ALICE, CANCEL, action_id)
    (cancelled,) = bot.fake.wait_at(url)
    assert cancelled.body["replace_original"] is True and "Cancelled by <@UALICE>" in cancelled.text
    _response, url = bot.slack.click(ALICE, CONFIRM, action_id)  # a stale Confirm, e.g. another tab
    (refused,) = bot.fake.wait_at(url)
    assert "withdrawn" in refused.text and writes(bot.registry) == []
    assert bot.registry.store.get_action(action_id)["state"] == "cancelled"  # type: ignore[index]


def test_another_persons_click_gets_a_private_not_yours(bot: Rig) -> None:
    target = names(bot.registry, "ACTIVE", 1)[0]
    action_id, _ = bot.preview(ALICE, f"stop {target}")
    for user, button in ((DAVE, CONFIRM), (BOB, CONFIRM), (DAVE, CANCEL), (BOB, CANCEL)):
        _response, url = bot.slack.click(user, button, action_id)
        (answer,) = bot.fake.wait_at(url)
        assert answer.body["replace_original"] is False and answer.body["response_type"] == "ephemeral"
        assert "Not yours" in answer.text
    assert bot.registry.store.get_action(action_id)["state"] == "pending" and writes(bot.registry) == []  # type: ignore[index]
    _response, url = bot.slack.click(ALICE, CONFIRM, action_id)
    bot.fake.wait_at(url, final=is_final)
    assert len(writes(bot.registry)) == 1


def test_an_expired_preview_says_so_instead_of_running(bot: Rig) -> None:
    target = names(bot.registry, "ACTIVE", 1)[0]
    action_id, _ = bot.preview(ALICE, f"stop {target}")
    bot.registry.clock.advance(600)  # past the 5-minute confirmation window
    _response, url = bot.slack.click(ALICE, CONFIRM, action_id)
    (answer,) = bot.fake.wait_at(url)
    assert (
        answer.body["replace_original"] is True and "expired" in answer.text and "Run the command again" in answer.text
    )
    assert not buttons(answer.blocks) and writes(bot.registry) == []


def test_a_double_click_runs_once(bot: Rig) -> None:
    target = names(bot.registry, "ACTIVE", 1)[0]
    action_id, _ = bot.preview(ALICE, f"stop {target}")
    clicks = in_parallel(*(lambda: bot.slack.click(ALICE, CONFIRM, action_id) for _ in range(3)))
    assert all(response.status_code == 200 for response, _url in clicks)
    urls = [url for _response, url in clicks]
    wait_until(lambda: sum(any(is_final(c) for c in bot.fake.at(u)) for u in urls) == 1, what="one final message")
    wait_until(lambda: all(bot.fake.at(u) for u in urls), what="an answer to every click")
    losers = [bot.fake.at(u)[-1] for u in urls if not any(is_final(c) for c in bot.fake.at(u))]
    assert len(losers) == 2 and all("already" in c.text and c.body["replace_original"] is False for c in losers)
    assert len(writes(bot.registry)) == 1


def test_a_second_replica_cannot_run_it_again(bot: Rig, tmp_path: Path) -> None:
    """Two bot processes on one store (Socket Mode hands a click to any connection): one execution."""
    first = bot.registry
    second = Registry(
        settings=first.settings,
        client=FlexusClient(first.settings, sandbox=sandbox_of(first)),
        store=Store(first.store.url, Keys.load(tmp_path).audit),
        policy=first.policy,
        keys=Keys.load(tmp_path),
    )
    other = SlackBot(second, bot.bot.settings, progress_interval=0.0)
    with serve(other.asgi()) as other_url:
        target = names(first, "ACTIVE", 1)[0]
        action_id, _ = bot.preview(ALICE, f"stop {target}")
        body_a, url_a = bot.slack.click_body(ALICE, CONFIRM, action_id)
        body_b, url_b = bot.slack.click_body(ALICE, CONFIRM, action_id)
        answers = in_parallel(
            lambda: bot.slack.post(body_a), lambda: bot.slack.post(body_b, url=f"{other_url}/slack/events")
        )
        assert [a.status_code for a in answers] == [200, 200]
        wait_until(lambda: bot.fake.at(url_a) and bot.fake.at(url_b), what="both replicas to answer")
        wait_until(lambda: any(is_final(c) for c in bot.fake.at(url_a) + bot.fake.at(url_b)), what="the result")
    second.store.engine.dispose()
    assert len(writes(first)) == 1


# -- who may ask ----------------------------------------------------------------------------------


def test_requests_from_outside_the_policy_are_refused_privately(bot: Rig) -> None:
    target = names(bot.registry, "ACTIVE", 1)[0]
    refusals = {
        "not a person in the policy": bot.slack.command(MALLORY, f"stop {target}")[0],
        "workspace is not allowed": bot.slack.command(ALICE, f"stop {target}", team=OTHER_TEAM)[0],
        "does not take requests in this channel": bot.slack.command(ALICE, f"stop {target}", channel=OTHER_CHANNEL)[0],
    }
    for words, response in refusals.items():
        assert response.status_code == 200 and response.json()["response_type"] == "ephemeral"
        assert words in json.dumps(response.json())

    response, url = bot.slack.command(CAROL, f"stop {target}")  # a viewer: the registry refuses the role
    (answer,) = bot.fake.wait_at(url)
    assert "needs the operator role" in answer.text

    action_id, _ = bot.preview(ALICE, f"stop {target}")
    for kwargs in ({"user_team": OTHER_TEAM}, {"channel": OTHER_CHANNEL}):  # Slack Connect, another channel
        _response, url = bot.slack.click(ALICE, CONFIRM, action_id, **kwargs)
        (answer,) = bot.fake.wait_at(url)
        assert "Not allowed" in answer.text and answer.body["replace_original"] is False
    _response, url = bot.slack.click(MALLORY, CONFIRM, action_id)
    assert "not a person in the policy" in bot.fake.wait_at(url)[0].text
    assert writes(bot.registry) == [] and bot.registry.store.get_action(action_id)["state"] == "pending"  # type: ignore[index]


# -- password resets ------------------------------------------------------------------------------


def test_a_password_in_the_command_text_is_refused(bot: Rig) -> None:
    target = names(bot.registry, "ACTIVE", 1)[0]
    response, _url = bot.slack.command(ALICE, f"reset-password {target} {RESET_PASSWORD}")
    answer = json.dumps(response.json())
    assert "never taken from command text" in answer and RESET_PASSWORD not in answer
    assert bot.fake.api("views.open") == [] and sandbox_of(bot.registry).request_log == []


def test_the_reset_form_checks_the_password_without_echoing_it(bot: Rig) -> None:
    target = names(bot.registry, "ACTIVE", 1)[0]
    view = bot.open_reset(ALICE, target)
    assert json.loads(view["private_metadata"])["servers"] == [target]
    mismatch = bot.slack.submit(ALICE, view, reset_values("rotate", RESET_PASSWORD, RESET_PASSWORD + "x"))
    assert mismatch.json() == {"response_action": "errors", "errors": {"password_again": "The two entries differ."}}
    weak = bot.slack.submit(ALICE, view, reset_values("rotate", WEAK_PASSWORD)).json()
    assert weak["response_action"] == "errors" and "three of" in weak["errors"]["password"]
    both = reset_values("rotate", None)
    both["password"]["value"]["value"] = RESET_PASSWORD  # "generate" chosen, but a password typed too
    assert "password" in bot.slack.submit(ALICE, view, both).json()["errors"]
    short_reason = bot.slack.submit(ALICE, view, reset_values("x", RESET_PASSWORD)).json()
    assert short_reason["response_action"] == "errors" and "reason" in short_reason["errors"]
    for answer in (mismatch.text, json.dumps(weak), json.dumps(short_reason)):
        assert RESET_PASSWORD not in answer and WEAK_PASSWORD not in answer
    assert sandbox_of(bot.registry).request_log == [] and bot.registry.store.audit_records() == []


def test_reset_requested_approved_and_executed_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the libraries included, at their most talkative
    with rig(tmp_path, log_level=logging.DEBUG, watch_interval=0.1) as bot:
        targets = names(bot.registry, "ACTIVE", 2)
        view = bot.open_reset(ALICE, " ".join(targets))
        metadata = json.loads(view["private_metadata"])
        response = bot.slack.submit(ALICE, view, reset_values("rotate after incident 42", RESET_PASSWORD))
        assert response.status_code == 200 and response.text == ""  # the modal closes at once
        (preview,) = bot.fake.wait_at(metadata["response_url"])
        assert "Request approval" in json.dumps(preview.blocks) and "given (hidden)" in preview.text
        assert "<@UBOB>" in preview.text and "<@UERIN>" in preview.text and "<@UALICE>" not in preview.text
        dry = [r for r in sandbox_of(bot.registry).request_log if r.operation == "BatchResetServersPassword"]
        assert dry and all(r.dry_run for r in dry) and writes(bot.registry) == []  # the API's own dry run

        action_id = buttons(preview.blocks)[CONFIRM]["value"]
        _response, url = bot.slack.click(ALICE, CONFIRM, action_id)
        (sent,) = bot.fake.wait_at(url)
        assert f"<#{APPROVALS_CHANNEL}>" in sent.text
        request = bot.approval_message(action_id)
        assert request.body["channel"] == APPROVALS_CHANNEL
        for words in ("<@UALICE>", "rotate after incident 42", *targets, f"<!subteam^{APPROVER_GROUP}>", "<!date^"):
            assert words in request.text, words
        assert set(buttons(request.blocks)) == {APPROVE, REJECT}
        ts = bot.approval_ts(action_id)

        for user, words in ((ALICE, "alice is not an approver"), (DAVE, "not an approver"), (CAROL, "not an approver")):
            _response, url = bot.slack.click(user, APPROVE, action_id, channel=APPROVALS_CHANNEL, message_ts=ts)
            (answer,) = bot.fake.wait_at(url)
            assert words in answer.text and answer.body["response_type"] == "ephemeral"
        assert bot.fake.api("chat.update") == [] and writes(bot.registry) == []

        dms = len(bot.fake.api("chat.postMessage"))
        _response, url = bot.slack.click(BOB, APPROVE, action_id, channel=APPROVALS_CHANNEL, message_ts=ts)
        (updated,) = bot.fake.wait_api("chat.update")
        assert updated.body["ts"] == ts and "Approved* by <@UBOB>" in updated.text and not buttons(updated.blocks)
        assert all(f"*{t}* done" in updated.text for t in targets)
        dm = bot.fake.wait_api("chat.postMessage", dms + 1)[-1]
        assert dm.body["channel"] == "D" + ALICE[1:] and bot.fake.api("conversations.open")[-1].body["users"] == ALICE
        assert "approved by <@UBOB>" in dm.text and REVEAL not in buttons(dm.blocks)  # nothing was generated

        real = resets(bot.registry)
        assert len(real) == 1 and sorted(real[0].server_ids) == sorted(
            s["id"] for s in servers_with(bot.registry, "ACTIVE") if s["name"] in targets
        )
        _response, url = bot.slack.click(ERIN, APPROVE, action_id, channel=APPROVALS_CHANNEL, message_ts=ts)
        assert "already" in bot.fake.wait_at(url)[0].text and len(resets(bot.registry)) == 1
        assert {c.method for c in bot.fake.api_calls()} <= set(WEB_API_SCOPES)  # the manifests' scopes cover them

    # The typed password: nowhere in anything sent to Slack, logged, stored or audited.
    assert RESET_PASSWORD not in bot.fake.everything()
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert len(caplog.records) > 50 and RESET_PASSWORD not in logged
    assert REDACTED in logged  # the libraries did try to log payloads; the filter cut them
    assert RESET_PASSWORD not in everything_written(bot.registry)


def test_a_generated_password_is_shown_once_only_to_the_requester(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with rig(tmp_path, log_level=logging.DEBUG, watch_interval=0.1) as bot:
        target = names(bot.registry, "ACTIVE", 1)[0]
        action_id = bot.request_reset(ALICE, target, password=None)
        ts = bot.approval_ts(action_id)
        dms = len(bot.fake.api("chat.postMessage"))
        bot.slack.click(ERIN, APPROVE, action_id, channel=APPROVALS_CHANNEL, message_ts=ts)
        dm = bot.fake.wait_api("chat.postMessage", dms + 1)[-1]
        reveal = buttons(dm.blocks)[REVEAL]
        assert reveal["value"] == action_id and "Reveal password" in dm.text + json.dumps(dm.blocks)

        _response, url = bot.slack.click(BOB, REVEAL, action_id, channel="DBOB")  # someone else
        assert "Nothing to show" in bot.fake.wait_at(url)[0].text
        opened = len(bot.fake.api("views.open"))
        _response, url = bot.slack.click(ALICE, REVEAL, action_id, channel=dm.body["channel"])
        window = bot.fake.wait_api("views.open", opened + 1)[-1]
        password = window.view["blocks"][1]["text"]["text"].strip("`")
        assert problem_with_password(password) is None and len(password) >= 16
        (done,) = bot.fake.wait_at(url)
        assert "shown to you once" in done.text and done.body["replace_original"] is True
        _response, url = bot.slack.click(ALICE, REVEAL, action_id, channel=dm.body["channel"])
        assert "Nothing to show" in bot.fake.wait_at(url)[0].text  # once
        assert len(resets(bot.registry)) == 1

    holding = [c for c in bot.fake.snapshot() if password in c.raw]
    assert holding == [window]  # only the one window shown to the requester
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert password not in logged and password not in everything_written(bot.registry)


def test_an_approver_cannot_approve_their_own_request(bot: Rig) -> None:
    target = names(bot.registry, "ACTIVE", 1)[0]
    action_id = bot.request_reset(BOB, target, RESET_PASSWORD)  # bob is an approver, and the requester
    request = bot.approval_message(action_id)
    assert "<@UBOB> asks" in request.text and "<@UERIN>" in request.text
    ts = bot.approval_ts(action_id)
    _response, url = bot.slack.click(BOB, APPROVE, action_id, channel=APPROVALS_CHANNEL, message_ts=ts)
    (answer,) = bot.fake.wait_at(url)
    assert "separation of duties" in answer.text and answer.body["response_type"] == "ephemeral"
    assert bot.fake.api("chat.update") == [] and resets(bot.registry) == []
    bot.slack.click(ERIN, APPROVE, action_id, channel=APPROVALS_CHANNEL, message_ts=ts)
    wait_until(lambda: bot.fake.api("chat.update"), what="the decision")
    assert len(resets(bot.registry)) == 1


def test_two_approvers_at_once_execute_once(bot: Rig) -> None:
    target = names(bot.registry, "ACTIVE", 1)[0]
    action_id = bot.request_reset(ALICE, target, RESET_PASSWORD)
    ts = bot.approval_ts(action_id)
    clicks = in_parallel(
        lambda: bot.slack.click(BOB, APPROVE, action_id, channel=APPROVALS_CHANNEL, message_ts=ts),
        lambda: bot.slack.click(ERIN, APPROVE, action_id, channel=APPROVALS_CHANNEL, message_ts=ts),
    )
    urls = [url for _response, url in clicks]
    wait_until(lambda: any("Approved* by" in c.text for c in bot.fake.api("chat.update")), what="the decision")
    loser = wait_until(lambda: [c for u in urls for c in bot.fake.at(u)], what="the loser's answer")
    assert len(loser) == 1 and "already" in loser[0].text and loser[0].body["response_type"] == "ephemeral"
    assert len(resets(bot.registry)) == 1
    assert all("Running" not in c.text for c in bot.fake.api("chat.update"))


def test_a_rejected_request_is_marked_and_never_runs(bot: Rig) -> None:
    target = names(bot.registry, "ACTIVE", 1)[0]
    action_id = bot.request_reset(ALICE, target, RESET_PASSWORD)
    ts = bot.approval_ts(action_id)
    _response, url = bot.slack.click(DAVE, REJECT, action_id, channel=APPROVALS_CHANNEL, message_ts=ts)
    assert "not an approver" in bot.fake.wait_at(url)[0].text
    dms = len(bot.fake.api("chat.postMessage"))
    bot.slack.click(BOB, REJECT, action_id, channel=APPROVALS_CHANNEL, message_ts=ts)
    (updated,) = bot.fake.wait_api("chat.update")
    assert "Rejected* by <@UBOB>" in updated.text and not buttons(updated.blocks)
    assert "rejected by <@UBOB>" in bot.fake.wait_api("chat.postMessage", dms + 1)[-1].text
    _response, url = bot.slack.click(ERIN, APPROVE, action_id, channel=APPROVALS_CHANNEL, message_ts=ts)
    assert "rejected by bob" in bot.fake.wait_at(url)[0].text and resets(bot.registry) == []


def test_an_expired_request_is_marked_expired_on_click_and_by_the_watcher(bot: Rig) -> None:
    targets = names(bot.registry, "ACTIVE", 2)
    clicked = bot.request_reset(ALICE, targets[0], RESET_PASSWORD)
    bot.registry.clock.advance(2 * 3600)  # past the approval window
    _response, url = bot.slack.click(
        BOB, APPROVE, clicked, channel=APPROVALS_CHANNEL, message_ts=bot.approval_ts(clicked)
    )
    assert "expired" in bot.fake.wait_at(url)[0].text
    wait_until(lambda: any("Expired" in c.text for c in bot.fake.api("chat.update")), what="the Expired edit")

    # Nobody clicks: the bot still replaces the buttons when the request expires, and tells the requester.
    unanswered = bot.request_reset(ALICE, targets[1], RESET_PASSWORD)
    dms = len(bot.fake.api("chat.postMessage"))
    bot.registry.clock.advance(2 * 3600)  # nobody clicks, and the approval window passes
    ts = bot.approval_ts(unanswered)
    edit = wait_until(lambda: [c for c in bot.fake.api("chat.update") if c.body["ts"] == ts], what="the watcher")
    assert "Expired" in edit[-1].text and not buttons(edit[-1].blocks)
    assert "expired" in bot.fake.wait_api("chat.postMessage", dms + 1)[-1].text
    assert resets(bot.registry) == []


def test_a_request_decided_elsewhere_updates_the_message(bot: Rig) -> None:
    target = names(bot.registry, "ACTIVE", 1)[0]
    action_id = bot.request_reset(ALICE, target, RESET_PASSWORD)
    asyncio.run(bot.registry.reject(Caller("os:bob", "cli"), action_id, "not today"))  # bob, on the CLI
    ts = bot.approval_ts(action_id)
    edit = wait_until(lambda: [c for c in bot.fake.api("chat.update") if c.body["ts"] == ts], what="the watcher")
    assert "Rejected* by <@UBOB>" in edit[-1].text and "not today" in edit[-1].text


def test_approvals_lists_requests_with_buttons_for_approvers(bot: Rig) -> None:
    target = names(bot.registry, "ACTIVE", 1)[0]
    action_id = bot.request_reset(ALICE, target, RESET_PASSWORD)
    _response, url = bot.slack.command(ALICE, "approvals")
    mine = bot.fake.wait_at(url)[0]
    assert "(yours)" in mine.text and set(buttons(mine.blocks)) == {REJECT}  # withdraw only
    _response, url = bot.slack.command(ERIN, "approvals")
    theirs = bot.fake.wait_at(url)[0]
    assert set(buttons(theirs.blocks)) == {APPROVE, REJECT} and "<@UALICE>" in theirs.text
    _response, url = bot.slack.click(ERIN, APPROVE, action_id)  # from the ephemeral list
    decided = bot.fake.wait_at(url)[-1]
    assert "Approved* by <@UERIN>" in decided.text and decided.body["replace_original"] is True
    # The message in the approvals channel is closed too, though nobody clicked there.
    ts = bot.approval_ts(action_id)
    wait_until(lambda: [c for c in bot.fake.api("chat.update") if c.body["ts"] == ts], what="the channel message")
    assert len(resets(bot.registry)) == 1


def test_slack_api_errors_are_reported_not_swallowed(bot: Rig) -> None:
    target = names(bot.registry, "ACTIVE", 1)[0]
    bot.fake.failing["views.open"] = "expired_trigger_id"
    response, url = bot.slack.command(ALICE, f"reset-password {target}")
    assert response.status_code == 200
    assert "expired_trigger_id" in bot.fake.wait_at(url)[0].text

    bot.fake.failing = {"chat.postMessage": "not_in_channel"}  # the bot was never invited there
    view = bot.open_reset(ALICE, target)
    metadata = json.loads(view["private_metadata"])
    bot.slack.submit(ALICE, view, reset_values("rotate", RESET_PASSWORD))
    action_id = buttons(bot.fake.wait_at(metadata["response_url"])[0].blocks)[CONFIRM]["value"]
    _response, url = bot.slack.click(ALICE, CONFIRM, action_id)
    answer = bot.fake.wait_at(url)[0]
    assert "not_in_channel" in answer.text and "/flexus approvals" in answer.text


def test_the_bot_endpoint_is_only_post_and_health_is_get(bot: Rig) -> None:
    assert httpx.get(f"{bot.slack.bot_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{bot.slack.bot_url}/slack/events").status_code == 405


def test_policy_without_approvals_channel_points_approvers_to_the_list(tmp_path: Path) -> None:
    policy = slack_policy(SLACK.model_copy(update={"approvals_channel": None}))
    with rig(tmp_path, policy=policy) as bot:
        target = names(bot.registry, "ACTIVE", 1)[0]
        view = bot.open_reset(ALICE, target)
        metadata = json.loads(view["private_metadata"])
        bot.slack.submit(ALICE, view, reset_values("rotate", RESET_PASSWORD))
        action_id = buttons(bot.fake.wait_at(metadata["response_url"])[0].blocks)[CONFIRM]["value"]
        _response, url = bot.slack.click(ALICE, CONFIRM, action_id)
        answer = bot.fake.wait_at(url)[0]
        assert "no approvals channel is configured" in answer.text and "/flexus approvals" in answer.text
        assert bot.fake.api("chat.postMessage") == []
        assert bot.registry.store.get_action(action_id)["state"] == "awaiting_approval"  # type: ignore[index]
