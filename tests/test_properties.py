"""Property-based tests: arbitrary input never crashes, hangs or writes; the signer always round-trips
through the sandbox's verifier and any tampering is caught."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexus_ops.cloud import rules, signer
from flexus_ops.core.errors import FlexusError, InvalidInput
from flexus_ops.core.plans import ChangeOutput
from flexus_ops.registry.catalog import TOOLS
from flexus_ops.registry.registry import Registry
from flexus_ops.sandbox.responses import SignatureRejected, verify_signature
from tests.gatekit import ALICE, make_registry, sandbox_of

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SK = "property-test-secret-key-0123456789"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=12,
)


def arguments_for(model: type) -> st.SearchStrategy[dict[str, Any]]:
    names = list(model.model_fields)
    keys = st.sampled_from(names) | st.text(min_size=1, max_size=12)
    plausible = st.sampled_from(["web-01", "cache-01", "00000000-0000-4000-8000-000000000000", "SOFT", "HARD"])
    return st.dictionaries(keys, json_values | plausible | st.lists(plausible, max_size=4), max_size=6)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def registry(loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = make_registry(Path(tmp_path_factory.mktemp("properties")))
    yield reg
    loop.run_until_complete(reg.aclose())


@pytest.mark.parametrize("spec", TOOLS, ids=[spec.name for spec in TOOLS])
def test_any_arguments_are_answered_clearly_and_never_write(
    spec: Any, registry: Registry, loop: asyncio.AbstractEventLoop
) -> None:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(arguments_for(spec.input_model))
    def check(arguments: dict[str, Any]) -> None:
        try:
            output = loop.run_until_complete(asyncio.wait_for(registry.call(ALICE, spec.name, arguments), 30))
        except InvalidInput as exc:
            assert exc.field and exc.rule and len(str(exc)) < 400
        except FlexusError as exc:  # refused, unknown server, cloud said no: all said plainly
            assert str(exc) and len(str(exc)) < 2000
        else:
            if spec.gated:
                assert isinstance(output, ChangeOutput) and output.preview is not None
        assert sandbox_of(registry).writes() == [], "no arguments alone can make a change"

    check()


segment = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12).filter(lambda s: s not in "..")
query_pairs = st.lists(st.tuples(st.text(min_size=1, max_size=8), st.text(max_size=12)), max_size=4)
header_value = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)


def _send(
    path: str, pairs: list[tuple[str, str]], headers: dict[str, str], body: bytes | None
) -> tuple[str, str, dict]:
    signed = signer.sign(
        access_key="AKPROPERTY",
        secret_key=SK,
        method="POST",
        host="ecs.example.com",
        path=path,
        query=pairs,
        headers=headers,
        body=body,
        now=NOW,
    )
    received = {name.lower(): value for name, value in signed.headers.items()}
    return path, signed.query, received


@settings(max_examples=200, deadline=None)
@given(st.lists(segment, min_size=1, max_size=4), query_pairs, header_value, st.binary(max_size=64))
def test_signatures_round_trip_and_tampering_is_caught(
    segments: list[str], pairs: list[tuple[str, str]], custom: str, body: bytes
) -> None:
    path = "/" + "/".join(quote(s, safe="") for s in segments)
    headers = {"Content-Type": "application/json", "X-Custom": custom}
    path, query, received = _send(path, pairs, headers, body or None)

    def verify(**changes: Any) -> str:
        values = {"method": "POST", "path": path, "query_string": query, "headers": received, "body": body or None}
        values.update(changes)
        return verify_signature(secret_for=lambda ak: SK if ak == "AKPROPERTY" else None, now=NOW, **values)

    assert verify() == "AKPROPERTY"
    tampered = [
        {"method": "PUT"},
        {"body": (body or b"") + b"x"},
        {"headers": {**received, "x-custom": custom + "!"}},
        {"query_string": query + ("&" if query else "") + "extra=1"},
        {"path": path + "x"},
    ]
    for change in tampered:
        with pytest.raises(SignatureRejected):
            verify(**change)


HOSTILE = [
    "http://evil.example/",
    "//evil.example",
    "web-01@evil.example",
    "../../v3/auth/tokens",
    "evil.example:443",
    "%2F%2Fevil.example",
    "web-01?x=http://evil.example",
]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(
        [
            spec.name
            for spec in TOOLS
            if "servers" in spec.input_model.model_fields or "server" in spec.input_model.model_fields
        ]
    ),
    st.lists(st.sampled_from(HOSTILE) | st.text(max_size=30), min_size=1, max_size=3, unique=True),
)
def test_no_argument_steers_a_request_to_another_host(
    registry: Registry, loop: asyncio.AbstractEventLoop, tool: str, refs: list[str]
) -> None:
    """Hosts come from configuration only: whatever names a server, every request goes to the configured cloud."""
    seen: list[str] = []

    async def record(request: Any) -> None:
        seen.append(f"{request.url.scheme}://{request.url.host}")

    hooks = registry.client._http.event_hooks["request"]
    hooks.append(record)
    try:
        spec = registry.specs[tool]
        field = "servers" if "servers" in spec.input_model.model_fields else "server"
        arguments: dict[str, Any] = {field: refs if field == "servers" else refs[0]}
        if tool == "flexus_reset_servers_password":
            arguments["reason"] = "hostile input"
        with contextlib.suppress(FlexusError):
            loop.run_until_complete(asyncio.wait_for(registry.call(ALICE, tool, arguments), 30))
    finally:
        hooks.remove(record)
    assert set(seen) <= {registry.client.base_url}


def test_hostile_names_are_looked_up_on_the_configured_cloud_only(
    registry: Registry, loop: asyncio.AbstractEventLoop
) -> None:
    seen: list[str] = []

    async def record(request: Any) -> None:
        seen.append(f"{request.url.scheme}://{request.url.host}")

    registry.client._http.event_hooks["request"].append(record)
    try:
        for ref in HOSTILE:
            with pytest.raises(FlexusError, match="no server named"):
                loop.run_until_complete(registry.call(ALICE, "flexus_stop_servers", {"servers": [ref]}))
    finally:
        registry.client._http.event_hooks["request"].remove(record)
    assert len(seen) >= len(HOSTILE) and set(seen) == {registry.client.base_url}


@settings(max_examples=2000, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**64), length=st.integers(min_value=8, max_value=26))
def test_a_generated_password_is_never_refused(seed: int, length: int) -> None:
    """Every password the generator makes passes every rule of every OS (the cloud would refuse nothing)."""
    password = rules.generate_password(length, rng=random.Random(seed))
    assert len(password) == length
    for os_type in ("Linux", "Windows", None):
        assert rules.problem_with_password(password, os_type) is None, (
            os_type,
            rules.problem_with_password(password, os_type),
        )


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.text(alphabet=rules.GENERATED_PASSWORD_ALPHABET, min_size=1, max_size=8),
    start=st.integers(min_value=0, max_value=len("administrator") - 3),
    upper=st.booleans(),
)
def test_three_consecutive_characters_of_administrator_are_refused_on_windows_only(
    prefix: str, start: int, upper: bool
) -> None:
    run = "administrator"[start : start + 3]
    password = f"Aa1-{prefix}{run.upper() if upper else run}"[:26]
    assert rules.problem_with_password(password, "Windows") is not None
    if "root" not in password.lower() and "toor" not in password.lower():
        assert rules.problem_with_password(password, "Linux") is None


maybe_text = st.none() | st.sampled_from(["", "web-01", "ACTIVE", "powering-off", "cn-north-4b"])
server_details = st.fixed_dictionaries(
    {"id": st.sampled_from(["94e3bf91-1a61-4be2-ae44-158bae97ba94", ""])},
    optional={
        "name": maybe_text,
        "status": maybe_text,
        "OS-EXT-STS:task_state": maybe_text,
        "OS-EXT-AZ:availability_zone": maybe_text,
        "flavor": st.none()
        | st.fixed_dictionaries(
            {},
            optional={
                "id": maybe_text,
                "vcpus": st.none() | st.sampled_from(["2", 4]),
                "ram": st.none() | st.sampled_from(["", "8192", "big", 4096]),
            },
        ),
        "addresses": st.none()
        | st.dictionaries(
            st.sampled_from(["net-a", "net-b"]),
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "addr": maybe_text,
                        "OS-EXT-IPS:type": st.none() | st.sampled_from(["fixed", "floating", "other"]),
                    },
                ),
                max_size=3,
            ),
            max_size=2,
        ),
        "locked": st.none() | st.booleans(),
        "tags": st.none() | st.lists(st.sampled_from(["env=prod", "role=web", ""]), max_size=3),
        "metadata": st.none()
        | st.dictionaries(
            st.sampled_from(["charging_mode", "EcmResStatus", "other"]),
            st.sampled_from(["0", "1", "2", "freeze", "normal", ""]),
            max_size=3,
        ),
    },
)


@given(server_details)
def test_a_projected_server_is_its_summary_models_dump(raw: dict[str, Any]) -> None:
    # project() builds the compact form without a model per server; it must be exactly what the model gives.
    from flexus_ops.cloud.models import ServerDetail
    from flexus_ops.registry.outputs import ServerSummary, project

    server = ServerDetail.model_validate(raw)
    expected = ServerSummary.of(server).model_dump(exclude_none=True, exclude_defaults=True) | {"id": server.id}
    projected = project(server, False)
    assert projected == expected
    assert list(projected) == list(expected)  # the same key order, so the same JSON text
    # A listing reads only these fields (ServerRow): it must project to the very same summary.
    from flexus_ops.cloud.models import ServerRow

    assert project(ServerRow.model_validate(raw), False) == projected
