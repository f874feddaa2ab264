"""Deploying flexus-ops: secrets from files, the compose file, the container image and the systemd unit.

These machines have no container engine and cannot pull base images, so the image is checked the way it
is built: the Dockerfile's own build steps (``deploy/image.sh``, which its RUN lines call) run here in a
fresh virtual environment, then the image's ENTRYPOINT + CMD start from it and its HEALTHCHECK probes it.
The compose file is validated against the Compose Specification's JSON schema (vendored, see
tests/data/README.md) and checked for what the schema cannot say.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from flexus_ops import __version__
from flexus_ops.bots.slack.settings import SlackBotSettings
from flexus_ops.cli import EXIT_STORE, build_parser
from flexus_ops.config import FILE_SUFFIX, Settings, secret_variables
from flexus_ops.core.errors import ConfigurationError, MissingExtra, require_extra
from flexus_ops.gate.policy import token_principal
from flexus_ops.gate.store import make_engine
from tests.procs import FLEXUS_OPS, clean_env, free_port, stop, wait_http

ROOT = Path(__file__).resolve().parent.parent
SECRET = "file-held-secret-0123456789abcdef"  # the session's secret scan looks for it in logs and files
TOKEN = "fxt_deploy-test-token-0123456789abcdef"
SECRET_VARIABLES = {
    **{variable: (Settings, field) for field, variable in secret_variables(Settings).items()},
    **{variable: (SlackBotSettings, field) for field, variable in secret_variables(SlackBotSettings).items()},
}


# -- secrets from files (NAME_FILE) -----------------------------------------------------------------


@pytest.fixture
def secret_dir(tmp_path: Path) -> Iterator[Path]:
    """Where a test keeps its secret files; removed at the end, so the secret scan finds only leaks."""
    folder = tmp_path / "secrets"
    folder.mkdir()
    yield folder
    shutil.rmtree(folder)


def _value(settings: Any, field: str) -> str:
    value = getattr(settings, field)
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def test_every_secret_setting_is_one_a_file_can_give() -> None:
    expected = {"HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK", "HUAWEICLOUD_SDK_SECURITY_TOKEN", "FLEXUS_IAM_PASSWORD"}
    expected |= {"FLEXUS_TOKEN_KEY", "FLEXUS_ENCRYPTION_KEY", "FLEXUS_MCP_STATE_KEY", "FLEXUS_AUDIT_KEY"}
    expected |= {"FLEXUS_AUDIT_PREVIOUS_KEYS", "FLEXUS_STORE_URL"}  # a database URL may hold its password
    expected |= {"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"}
    assert expected <= set(SECRET_VARIABLES)


@pytest.mark.parametrize("variable", sorted(SECRET_VARIABLES))
def test_a_secret_is_read_from_its_file_less_the_trailing_newline(
    variable: str, secret_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_cls, field = SECRET_VARIABLES[variable]
    value = "sqlite:///" + str(secret_dir / "s.db") if field == "store_url" else SECRET
    (secret_dir / "value").write_text(value + "\n")
    monkeypatch.setenv(variable + FILE_SUFFIX, str(secret_dir / "value"))
    assert _value(settings_cls(), field) == value


def test_only_one_trailing_newline_is_removed(secret_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (secret_dir / "sk").write_text(f" {SECRET} \r\n")  # a CRLF editor; spaces may be part of a secret
    monkeypatch.setenv("HUAWEICLOUD_SDK_SK_FILE", str(secret_dir / "sk"))
    (secret_dir / "ak").write_text("AKFROMFILE")  # no newline at all
    monkeypatch.setenv("HUAWEICLOUD_SDK_AK_FILE", str(secret_dir / "ak"))
    settings = Settings()
    assert settings.secret_key is not None and settings.secret_key.get_secret_value() == f" {SECRET} "
    assert settings.access_key is not None and settings.access_key.get_secret_value() == "AKFROMFILE"
    assert settings.auth_mode.value == "aksk"


def test_a_value_and_a_file_together_are_refused(secret_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (secret_dir / "key").write_text(SECRET)
    monkeypatch.setenv("FLEXUS_TOKEN_KEY_FILE", str(secret_dir / "key"))
    monkeypatch.setenv("FLEXUS_TOKEN_KEY", SECRET[::-1])
    with pytest.raises(ConfigurationError) as refused:
        Settings.load()
    message = str(refused.value)
    assert "FLEXUS_TOKEN_KEY" in message and "FLEXUS_TOKEN_KEY_FILE" in message and "only one" in message
    assert SECRET not in message and SECRET[::-1] not in message


@pytest.mark.parametrize("case", ["missing", "a directory", "empty", "not text", "blank path"])
def test_a_file_that_cannot_give_the_secret_is_a_clear_error(
    case: str, secret_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = secret_dir / "bot_token"
    if case == "a directory":
        path.mkdir()
    elif case == "empty":
        path.write_text("\n")
    elif case == "not text":
        path.write_bytes(b"\xff\xfe" + SECRET.encode())
    monkeypatch.setenv("SLACK_BOT_TOKEN_FILE", "  " if case == "blank path" else str(path))
    with pytest.raises(ConfigurationError) as refused:
        SlackBotSettings()
    message = str(refused.value)
    assert message.startswith("SLACK_BOT_TOKEN_FILE")
    assert case == "blank path" or str(path) in message
    assert SECRET not in message


def test_a_store_url_from_a_file_keeps_its_password_all_the_way_to_the_driver(
    secret_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """compose hands the store URL over as a file, password included; the engine must connect with that
    password, not with the '***' SQLAlchemy puts in place of it when a URL is turned into a string."""
    (secret_dir / "store_url").write_text(f"postgresql://flexus:{SECRET}@127.0.0.1:9/flexus\n")
    monkeypatch.setenv("FLEXUS_STORE_URL_FILE", str(secret_dir / "store_url"))
    engine = make_engine(Settings.load().resolved_store_url)
    try:
        assert engine.url.drivername == "postgresql+psycopg"
        assert engine.url.password == SECRET
    finally:
        engine.dispose()


def test_the_cli_says_which_secret_file_failed_and_exits_4(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "audit_key"
    env = clean_env(tmp_path / "state", FLEXUS_AUDIT_KEY_FILE=str(missing))
    done = subprocess.run([FLEXUS_OPS, "audit"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_STORE, done.stderr
    assert "FLEXUS_AUDIT_KEY_FILE" in done.stderr and str(missing) in done.stderr
    assert "Traceback" not in done.stderr


# -- optional parts (extras) ------------------------------------------------------------------------


def test_a_missing_extra_is_named_with_the_pip_line() -> None:
    with pytest.raises(MissingExtra) as missing:
        require_extra("the thing", "slack", ("json", "no_such_module_for_flexus_tests"))
    assert missing.value.missing == ["no_such_module_for_flexus_tests"]
    assert str(missing.value).endswith("pip install 'flexus-ops[slack]'")


def test_a_postgresql_store_without_its_driver_names_the_postgres_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real(name, *a))
    for url in ("postgresql://flexus:pw@127.0.0.1:9/flexus", "postgresql+psycopg://flexus@127.0.0.1:9/flexus"):
        with pytest.raises(MissingExtra, match=re.escape("pip install 'flexus-ops[postgres]'")) as missing:
            make_engine(url)
        assert "pw" not in str(missing.value)


# -- compose.yaml -----------------------------------------------------------------------------------

COMPOSE_SCHEMA = json.loads((ROOT / "tests" / "data" / "compose-spec.schema.json").read_text())


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def compose_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(COMPOSE_SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def flexus_services() -> dict[str, dict[str, Any]]:
    """The services that run flexus-ops (built from this repository), not PostgreSQL."""
    return {name: s for name, s in compose()["services"].items() if s.get("build") == "."}


def test_compose_file_validates_against_the_compose_specification() -> None:
    assert compose_errors(compose()) == []


@pytest.mark.parametrize(
    ("breakage", "where"),
    [
        (lambda c: c["services"]["mcp"].update(depends_on={"postgres": {"condition": "when-ready"}}), "services/mcp"),
        (lambda c: c["services"]["mcp"].update(helthcheck={"test": ["NONE"]}), "services/mcp"),
        (lambda c: c["secrets"].update(extra={"value": "inline secret"}), "secrets/extra"),
    ],
)
def test_the_vendored_compose_schema_refuses_a_broken_file(breakage: Any, where: str) -> None:
    document = compose()
    breakage(document)
    assert any(error.startswith(where) for error in compose_errors(document)), compose_errors(document)


def test_compose_runs_mcp_slack_and_postgres_each_with_a_health_check() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "mcp", "slack"}
    assert services["mcp"]["command"][:3] == ["mcp", "--transport", "http"]
    assert services["slack"]["command"][0] == "slack"
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: no health check"
        assert "curl" not in json.dumps(test) and "wget" not in json.dumps(test), f"{name}: the image has no curl"
    for name, service in flexus_services().items():
        assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}, name
        assert service["image"] == f"flexus-ops:{__version__}", f"{name}: the image tag is the package version"
        assert "/readyz" in json.dumps(service["healthcheck"]["test"]), name


def test_compose_secrets_are_files_and_reach_flexus_only_as_file_variables() -> None:
    document = compose()
    declared = document["secrets"]
    for name, secret in declared.items():
        assert set(secret) == {"file"} and secret["file"].startswith("./secrets/"), f"secret {name}: a file only"
    for name, service in document["services"].items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: environment as a mapping"
        granted = set(service.get("secrets", []))
        assert granted <= set(declared), f"{name}: uses an undeclared secret"
        for variable, value in environment.items():
            assert variable not in SECRET_VARIABLES, f"{name}: {variable} inline; use {variable}_FILE"
            if variable.endswith(FILE_SUFFIX):
                secret = str(value).removeprefix("/run/secrets/")
                assert str(value) == f"/run/secrets/{secret}" and secret in granted, f"{name}: {variable}={value}"
    shared = {"store_url", "token_key", "encryption_key", "mcp_state_key", "audit_key"}
    for name, service in flexus_services().items():
        assert shared <= set(service["secrets"]), f"{name}: replicas must share the store and the keys"
    # ...but not a state dir: each process signs audit checkpoints with a key of its own there.
    state_volumes = [v.split(":")[0] for s in flexus_services().values() for v in s["volumes"]]
    assert len(state_volumes) == len(set(state_volumes)) == len(flexus_services())


def test_compose_sets_only_variables_flexus_ops_reads() -> None:
    known = {
        str(alias).upper()
        for cls in (Settings, SlackBotSettings)
        for field in cls.model_fields.values()
        for alias in field.validation_alias.choices  # type: ignore[union-attr]
    }
    known |= {variable + FILE_SUFFIX for variable in SECRET_VARIABLES}
    for name, service in flexus_services().items():
        unknown = set(service["environment"]) - known
        assert not unknown, f"{name}: {sorted(unknown)} are not settings flexus-ops reads"


def test_compose_commands_are_ones_the_cli_accepts() -> None:
    """Needs --public-url and --allowed-host on `flexus-ops mcp` (the OAuth/Host change of issue #14)."""
    parser = build_parser()
    for name, service in flexus_services().items():
        args = parser.parse_args([str(word) for word in service["command"]])
        assert args.command == name


# -- the Dockerfile ---------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction, arguments in dockerfile():
        if instruction == "FROM":
            found.append([])
        if found:
            found[-1].append((instruction, arguments))
    return found


def final(instruction: str) -> list[str]:
    return [arguments for name, arguments in stages()[-1] if name == instruction]


def image_env() -> dict[str, str]:
    """The runtime stage's ENV, as KEY=VALUE pairs (continuations joined)."""
    env: dict[str, str] = {}
    for arguments in final("ENV"):
        for pair in shlex.split(arguments):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def test_the_image_is_multi_stage_slim_non_root_with_flexus_ops_as_entrypoint() -> None:
    builder, runtime = stages()
    assert builder[0][1].endswith("-slim AS builder") and runtime[0][1].endswith("-slim AS runtime")
    assert any(name == "COPY" and args.startswith("--from=builder /wheels") for name, args in runtime)
    (user,) = final("USER")
    assert user.split(":")[0] not in ("root", "0")
    assert json.loads(final("ENTRYPOINT")[0]) == ["flexus-ops"]
    command = json.loads(final("CMD")[0])
    assert command[:3] == ["mcp", "--transport", "http"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert json.loads(final("VOLUME")[0]) == [image_env()["FLEXUS_STATE_DIR"]]
    (healthcheck,) = final("HEALTHCHECK")
    probe = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert probe[0] == "python" and "/healthz" in probe[-1] and "curl" not in healthcheck


def test_the_image_labels_name_the_registry_server_and_the_package_version() -> None:
    labels = dict(pair.split("=", 1) for arguments in final("LABEL") for pair in shlex.split(arguments))
    manifest = json.loads((ROOT / "manifests" / "server.json").read_text())
    assert labels["io.modelcontextprotocol.server.name"] == manifest["name"]
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.source"] == manifest["repository"]["url"]


def build_steps() -> list[list[str]]:
    """The RUN steps that call deploy/image.sh, as argument lists, in order (builder, then runtime)."""
    steps = []
    for instruction, arguments in dockerfile():
        if instruction == "RUN" and "image.sh" in arguments:
            steps.append(shlex.split(arguments.split("&&", 1)[0]))
    return steps


def test_the_image_builds_and_installs_only_through_deploy_image_sh() -> None:
    wheel, install = build_steps()
    assert wheel[:3] == ["sh", "deploy/image.sh", "wheel"]
    assert install[1].endswith("/image.sh") and install[2] == "install"
    copied = [args.split() for name, args in stages()[-1] if name == "COPY"]
    assert ["deploy/image.sh", install[1]] in copied, "the runtime stage runs the script it copied"


@pytest.fixture
def image(tmp_path: Path) -> Iterator[Path]:
    """The image's file system, as far as flexus-ops is concerned, under a scratch folder; the installed
    package holds the sandbox's well-known test credentials, so it is removed at the end."""
    yield tmp_path
    for folder in ("wheels", "opt"):
        shutil.rmtree(tmp_path / folder, ignore_errors=True)


@pytest.mark.slow
def test_the_dockerfile_steps_build_a_running_server_in_a_fresh_venv(image: Path) -> None:
    wheel_step, install_step = build_steps()
    extras = next(a.split("=", 1)[1] for n, a in stages()[-1] if n == "ARG" and a.startswith("EXTRAS="))
    # The image's paths, mapped into the scratch folder; everything else is the Dockerfile's own words.
    where = {
        "/src": str(ROOT),
        "/wheels": str(image / "wheels"),
        "/opt/flexus-ops": str(image / "opt"),
        "deploy/image.sh": str(ROOT / "deploy" / "image.sh"),
        "/usr/local/lib/flexus-ops/image.sh": str(ROOT / "deploy" / "image.sh"),
        "$EXTRAS": extras,
    }
    base_env = clean_env(image / "unused", PYTHON=sys.executable)
    for step in (wheel_step, install_step):
        command = [where.get(word, word) for word in step]
        done = subprocess.run(command, env=base_env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}: {done.stderr[-2000:]}"
    assert len(list((image / "wheels").glob("flexus_ops-*.whl"))) == 1

    # Run as the image does: its ENV (paths mapped), its ENTRYPOINT + CMD, on a free port.
    env = clean_env(image / "state")
    for key, value in image_env().items():
        env[key] = value.replace("/opt/flexus-ops", str(image / "opt")).replace("$PATH", env.get("PATH", ""))
    env["FLEXUS_STATE_DIR"] = str(image / "state")
    (image / "state").mkdir()
    (image / "state" / "policy.toml").write_text(
        f'[[people]]\nid = "alice"\nroles = ["operator"]\nprincipals = ["{token_principal(TOKEN)}"]\n'
    )
    port = free_port()
    command = json.loads(final("ENTRYPOINT")[0]) + json.loads(final("CMD")[0])
    command[command.index("--port") + 1] = str(port)
    command[0] = str(image / "opt" / "bin" / command[0])  # the image's PATH puts its venv first
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", process, timeout=60)
        probe = json.loads(final("HEALTHCHECK")[0].split(" CMD ", 1)[1])
        probe[0] = str(image / "opt" / "bin" / "python")
        probe[-1] = probe[-1].replace(":8765/", f":{port}/")
        health = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=30)
        assert health.returncode == 0, health.stderr
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
        hello = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "deploy-test", "version": "1"},
            },
        }
        headers = {"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {TOKEN}"}
        answer = httpx.post(f"http://127.0.0.1:{port}/mcp", json=hello, headers=headers, timeout=30)
        assert answer.status_code == 200 and '"serverInfo"' in answer.text, answer.text[:500]
        refused = httpx.post(f"http://127.0.0.1:{port}/mcp", json=hello, headers={**headers, "Authorization": ""})
        assert refused.status_code == 401
        where_from = subprocess.run(
            [str(image / "opt" / "bin" / "python"), "-c", "import flexus_ops; print(flexus_ops.__file__)"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert where_from.stdout.startswith(str(image / "opt")), "flexus_ops came from the checkout, not the image"
    finally:
        stop([process])


# -- the systemd unit -------------------------------------------------------------------------------

UNIT = ROOT / "deploy" / "flexus-ops-mcp.service"


def unit_settings() -> dict[str, list[str]]:
    text = re.sub(r"\\\n\s*", " ", UNIT.read_text())
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_systemd_unit_is_hardened_and_takes_secrets_as_credentials() -> None:
    unit = unit_settings()
    for key, value in {
        "DynamicUser": "yes",
        "StateDirectory": "flexus-ops",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
    }.items():
        assert unit.get(key) == [value], key
    environment = dict(entry.split("=", 1) for entry in unit["Environment"])
    assert environment["FLEXUS_STATE_DIR"] == "%S/flexus-ops"
    assert not set(environment) & set(SECRET_VARIABLES), "secrets come as credentials, never inline"
    credentials = {entry.split(":", 1)[0] for entry in unit["LoadCredential"]}
    for variable, value in environment.items():
        if variable.endswith(FILE_SUFFIX):
            assert variable.removesuffix(FILE_SUFFIX) in SECRET_VARIABLES, variable
            assert value.removeprefix("%d/") in credentials, variable
    (exec_start,) = unit["ExecStart"]
    command = shlex.split(exec_start)
    assert command[0].endswith("/bin/flexus-ops") and command[1] == "mcp"


def test_the_systemd_unit_command_is_one_the_cli_accepts() -> None:
    """Needs --public-url and --allowed-host on `flexus-ops mcp` (the OAuth/Host change of issue #14)."""
    (exec_start,) = unit_settings()["ExecStart"]
    args = build_parser().parse_args(shlex.split(exec_start)[1:])
    assert args.transport == "http"


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit's syntax is not checked here")
    copy = tmp_path / UNIT.name  # the unit names its installed command; point it at this environment's
    copy.write_text(UNIT.read_text().replace("/opt/flexus-ops/bin/flexus-ops", FLEXUS_OPS))
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
