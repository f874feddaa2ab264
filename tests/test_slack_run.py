"""Running the bot: the app manifests match the code, `flexus-ops slack` refuses to start half-configured,
and the real command serves HTTP mode and Socket Mode against the fake Slack."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from flexus_ops.bots.slack.app import BOT_SCOPES, EVENTS_PATH
from flexus_ops.bots.slack.blocks import CONFIRM
from flexus_ops.bots.slack.settings import COMMAND
from flexus_ops.cli import main
from tests.slackkit import (
    ALICE,
    APP_TOKEN,
    BOT_TOKEN,
    OPS_CHANNEL,
    SIGNING_SECRET,
    TEAM,
    FakeSlack,
    FakeSocketMode,
    SlackDriver,
    buttons,
    reset_values,
    serve,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = {"socket": ROOT / "manifests" / "slack-socket-mode.json", "http": ROOT / "manifests" / "slack-http.json"}
SOCKET_PASSWORD = "Socket-Mode-pass9"
POLICY = f"""
[slack]
team_ids = ["{TEAM}"]
channel_ids = ["{OPS_CHANNEL}"]
approvals_channel = "C0APPROVALS"

[[people]]
id = "alice"
roles = ["operator"]
principals = ["slack:{ALICE}"]

[[people]]
id = "bob"
roles = ["approver"]
principals = ["slack:UBOB"]
"""


# -- manifests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["socket", "http"])
def test_manifests_match_the_code(mode: str) -> None:
    manifest = json.loads(MANIFESTS[mode].read_text())
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == COMMAND and len(command["command"]) <= 32
    assert command["should_escape"] is False  # the parser reads plain text (it unescapes &amp; itself)
    assert sorted(manifest["oauth_config"]["scopes"]["bot"]) == sorted(BOT_SCOPES)
    settings = manifest["settings"]
    assert settings["interactivity"]["is_enabled"] is True and settings["token_rotation_enabled"] is False
    assert settings["socket_mode_enabled"] is (mode == "socket")
    if mode == "http":
        assert command["url"].endswith(EVENTS_PATH) and settings["interactivity"]["request_url"].endswith(EVENTS_PATH)
    else:
        assert "url" not in command and "request_url" not in settings["interactivity"]
    assert len(manifest["display_information"]["name"]) <= 35
    assert len(manifest["display_information"]["description"]) <= 140
    assert len(manifest["features"]["bot_user"]["display_name"]) <= 80


# -- refusing to start ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({}, "SLACK_BOT_TOKEN is not set"),
        ({"SLACK_BOT_TOKEN": BOT_TOKEN}, "SLACK_SIGNING_SECRET is not set"),
        (
            {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": "http://x.example"},
            "loopback",
        ),
    ],
)
def test_the_command_refuses_to_start_half_configured(
    env: dict[str, str], words: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLEXUS_STATE_DIR", str(tmp_path / "state"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["slack"]) == 4  # a configuration failure (the README's exit-code table)
    assert words in capsys.readouterr().err
    assert not (tmp_path / "state").exists()  # refused before anything was created
    assert main(["slack", "--mode", "socket"]) == 4


# -- the real command -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def flexus_ops_slack(tmp_path: Path, fake: FakeSlack, *args: str, **env: str) -> Iterator[subprocess.Popen[str]]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "FLEXUS_", "HUAWEICLOUD_"))} | {
        "FLEXUS_STATE_DIR": str(tmp_path / "state"),
        "FLEXUS_POLICY": str(policy),
        "FLEXUS_SANDBOX_JOB_SECONDS": "0.1",
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_API_URL": f"{fake.url}/api/",
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "flexus_ops.cli", "slack", *args],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def output_of(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None and process.stderr is not None
    return process.stdout.read() + process.stderr.read()


@pytest.mark.slow
def test_flexus_ops_slack_serves_http_mode(tmp_path: Path) -> None:
    fake = FakeSlack()
    with serve(fake.app()) as fake_url:
        fake.url = fake_url
        # Port 0: the system picks one, and the start-up line names it (bound before it is announced).
        with flexus_ops_slack(tmp_path, fake, "--port", "0", SLACK_SIGNING_SECRET=SIGNING_SECRET) as process:
            assert process.stderr is not None
            started = ""
            while "listening on" not in started and process.poll() is None:
                started += process.stderr.readline()
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", started)
            assert found and found[1] != "0", started + output_of(process)
            port = int(found[1])
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: _healthy(base) or process.poll() is not None, what="the bot to listen")
            assert process.poll() is None, output_of(process)
            driver = SlackDriver(base, fake)
            response, url = driver.command(ALICE, "list status=ACTIVE")
            assert response.status_code == 200 and response.text == ""
            assert "server(s)" in fake.wait_at(url)[0].text
            body, _ = driver.command_body(ALICE, "list")
            assert driver.post(body, secret="forged").status_code == 401
            driver.http.close()
        printed = started + output_of(process)
    assert f"http://127.0.0.1:{port}{EVENTS_PATH}" in printed and "SANDBOX" in printed
    assert SIGNING_SECRET not in printed and BOT_TOKEN not in printed


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).json() == {"status": "ok"}
    except httpx.HTTPError:
        return False


@pytest.mark.slow
def test_flexus_ops_slack_runs_socket_mode_when_the_app_token_is_set(tmp_path: Path) -> None:
    fake = FakeSlack()
    with FakeSocketMode() as socket_mode, serve(fake.app()) as fake_url:
        fake.url, fake.socket_url = fake_url, socket_mode.url
        with flexus_ops_slack(tmp_path, fake, SLACK_APP_TOKEN=APP_TOKEN) as process:
            connected = wait_until(
                lambda: socket_mode.connected.is_set() or process.poll() is not None, what="the bot to connect"
            )
            assert connected and process.poll() is None, output_of(process)
            driver = SlackDriver("unused: Socket Mode needs no endpoint", fake)
            form, url = driver.command_form(ALICE, "list")
            envelope = socket_mode.send("slash_commands", form)
            assert socket_mode.ack_of(envelope)["envelope_id"] == envelope
            assert "server(s)" in fake.wait_at(url)[0].text

            # A password typed in the modal arrives in a Socket Mode frame; nothing may log or echo it.
            form, url = driver.command_form(ALICE, "reset-password web-01")
            socket_mode.ack_of(socket_mode.send("slash_commands", form))
            view = fake.wait_api("views.open")[-1].view
            submission = driver.submission(ALICE, view, reset_values("socket mode rotation", SOCKET_PASSWORD))
            ack = socket_mode.ack_of(socket_mode.send("interactive", submission))
            assert "errors" not in json.dumps(ack)
            preview = fake.wait_at(url)[0]
            assert "Request approval" in json.dumps(preview.blocks) and buttons(preview.blocks)
        printed = output_of(process)
    assert "Socket Mode" in printed
    assert SOCKET_PASSWORD not in printed and SOCKET_PASSWORD not in fake.everything()
    assert APP_TOKEN not in printed and [c for c in fake.api_calls() if c.method == "apps.connections.open"]


def test_socket_mode_still_connecting_ends_on_sigterm_and_says_draining(tmp_path: Path) -> None:
    """Slack unreachable: the bot keeps trying to connect, and a SIGTERM must still end it (143), with
    readiness saying "draining" at once, not "ready" until SIGKILL."""
    from tests.procs import free_port

    fake = FakeSlack()
    fake.url = "http://127.0.0.1:9"  # nothing listens: connections.open never succeeds
    port = free_port()
    with flexus_ops_slack(tmp_path, fake, "--health-port", str(port), SLACK_APP_TOKEN=APP_TOKEN) as process:
        base = f"http://127.0.0.1:{port}"

        def probe_answers() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return process.poll() is not None

        assert wait_until(probe_answers, what="the probe port"), output_of(process)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 143, output_of(process)


@pytest.mark.slow
def test_sigterm_on_http_waits_for_a_confirmed_change_then_exits_143(tmp_path: Path) -> None:
    """A confirmed change runs after its click was acked (on the answer worker): SIGTERM turns new events
    away and readiness says no at once, but the process stays until the change is done and its outcome
    is shown, then exits 143."""
    fake = FakeSlack()
    with serve(fake.app()) as fake_url:
        fake.url = fake_url
        port = free_port()
        env = {
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "FLEXUS_SANDBOX_JOB_SECONDS": "3",
            "FLEXUS_JOB_POLL_SECONDS": "0.2",
        }
        with flexus_ops_slack(tmp_path, fake, "--port", str(port), **env) as process:
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: _healthy(base) or process.poll() is not None, what="the bot to listen")
            assert process.poll() is None, output_of(process)
            driver = SlackDriver(base, fake)
            response, url = driver.command(ALICE, "stop web-01")
            assert response.status_code == 200
            (preview,) = fake.wait_at(url)
            action_id = buttons(preview.blocks)[CONFIRM]["value"]
            clicked, here = driver.click(ALICE, CONFIRM, action_id)
            assert clicked.status_code == 200
            fake.wait_at(here)  # the first progress: the change is running, its click long since acked
            process.send_signal(signal.SIGTERM)
            wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 503, what="readiness to say draining")
            turned_away, _ = driver.command(ALICE, "list")
            assert turned_away.status_code == 503
            final = fake.wait_at(here, final=lambda call: "Confirmed by" in call.text)
            process.wait(timeout=30)
            driver.http.close()
        printed = output_of(process)
    assert process.returncode == 143, printed
    assert "✅" in final[-1].text and "Traceback" not in printed
