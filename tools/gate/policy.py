"""Who may do what: people, the principals each surface knows them by, roles, and the gate's settings.

One policy file (TOML) serves every surface, so separation of duties holds across them: the person
who asked for a password reset on MCP cannot approve it from Slack or the CLI.

Principals are ``surface:identifier``: ``os:alice`` (CLI and MCP over stdio), ``mcp-token:<sha256 of
the bearer token>`` (MCP over HTTP), ``oidc:<issuer>#<sub>`` (MCP over HTTP with an OAuth access token:
the issuer exactly as configured, and the token's ``sub``, which is unique only per issuer),
``slack:U012ABC`` (a Slack user id, immutable).

When no policy file exists, the local OS user is an operator and nobody is an approver, so password
resets are refused until a policy names an approver: the safe default.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import tomllib
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from ..core.errors import ConfigurationError
from .private import trusted


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    name: str | None = None
    roles: list[Role] = Field(default_factory=lambda: [Role.VIEWER])
    principals: list[str] = Field(default_factory=list)

    @field_validator("principals")
    @classmethod
    def _principal_shape(cls, values: list[str]) -> list[str]:
        for value in values:
            surface, sep, ident = value.partition(":")
            if not sep or not surface or not ident:
                raise ValueError(f"principal {value!r} must look like 'surface:id', e.g. 'slack:U012ABC'")
            issuer, sep, subject = ident.partition("#")
            if surface == "oidc" and (not sep or not subject or not issuer.startswith(("https://", "http://"))):
                raise ValueError(
                    f"principal {value!r} must look like 'oidc:<issuer URL>#<sub>', "
                    "e.g. 'oidc:https://idp.example.com/realms/ops#248289761001'"
                )
        return values

    def has(self, role: Role) -> bool:
        return role in self.roles or Role.ADMIN in self.roles

    @property
    def display(self) -> str:
        return self.name or self.id


class GateSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    confirmation_ttl_seconds: int = Field(300, ge=10, le=86_400)
    approval_ttl_seconds: int = Field(3600, ge=60, le=7 * 86_400)
    reveal_ttl_seconds: int = Field(3600, ge=60, le=86_400)
    reconcile_after_seconds: int = Field(
        120, ge=5, le=86_400, description="an execution silent this long is presumed interrupted and reconciled"
    )
    confirmation_fallback: Literal["token", "deny"] = "token"
    read_only: bool = False
    allow_tools: list[str] = Field(default_factory=list, description="empty = every tool")
    deny_tools: list[str] = Field(default_factory=list)
    require_approval: list[str] = Field(default_factory=lambda: ["flexus_reset_servers_password"])
    # The blast radius of one change, counted as the servers its plan acts on (a rollout in waves counts
    # all of its servers): above the first it needs a second person (when the policy names an approver),
    # above the second it is refused at preview.
    approve_above_servers: int = Field(50, ge=1, le=100_000)
    max_servers_per_change: int = Field(1000, ge=1, le=100_000)


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    settings: GateSettings = Field(default_factory=GateSettings)
    # The Slack surface's [slack] table, kept as the file has it: the surface validates it with its own
    # model (bots/slack/settings.py), so a policy with one loads where Slack is not installed and the
    # gate imports no surface.
    slack: dict[str, Any] = Field(default_factory=dict)
    people: list[Person] = Field(default_factory=list)
    source: str = Field("built-in default", exclude=True)
    _by_principal: dict[str, Person] = PrivateAttr(default_factory=dict)
    _by_id: dict[str, Person] = PrivateAttr(default_factory=dict)

    def model_post_init(self, _context: object) -> None:
        owners: dict[str, str] = {}
        for person in self.people:
            for principal in person.principals:
                if principal in owners and owners[principal] != person.id:
                    raise ValueError(f"principal {principal} belongs to both {owners[principal]} and {person.id}")
                owners[principal] = person.id
        self._by_principal = {p: person for person in self.people for p in person.principals}
        self._by_id = {person.id: person for person in self.people}

    def person_for(self, principal: str) -> Person | None:
        return self._by_principal.get(principal)

    def person(self, person_id: str) -> Person | None:
        return self._by_id.get(person_id)

    def tool_enabled(self, name: str) -> bool:
        if name in self.settings.deny_tools:
            return False
        return not self.settings.allow_tools or name in self.settings.allow_tools

    def needs_approval(self, name: str, servers: int = 0) -> bool:
        """The tool always needs approval, or this change acts on more servers than the policy lets one
        person change alone (only when the policy names an approver: with none, nobody could approve)."""
        return name in self.settings.require_approval or self.too_many_for_one(servers)

    def too_many_for_one(self, servers: int) -> bool:
        return bool(self.approvers) and servers > self.settings.approve_above_servers

    def blast_radius_problem(self, servers: int) -> str | None:
        """Why a change acting on ``servers`` servers is refused, or None."""
        cap = self.settings.max_servers_per_change
        if servers <= cap:
            return None
        return (
            f"this change acts on {servers} servers; the policy allows at most {cap} in one change "
            f"(max_servers_per_change). Split it into changes of at most {cap}: narrow the selection (a name "
            "prefix, a tag, a status, a flavor) or name fewer servers. Waves do not get around it: a rollout "
            "counts all of its servers"
        )

    @property
    def approvers(self) -> list[Person]:
        return [person for person in self.people if person.has(Role.APPROVER)]


def os_user() -> str:
    """The name of the effective uid, from the kernel and the passwd database.

    Never from ``LOGNAME``, ``USER`` or ``SUDO_USER`` (what ``getpass.getuser()`` reads first): anyone can
    set those, and ``os:`` principals decide who may approve whose request. A uid with no passwd entry
    (some containers) is named by its number."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"


@cache
def os_principal() -> str:
    # Looked up once: it is asked on every MCP call over stdio, and a process's user does not change.
    return f"os:{os_user()}"


def token_principal(bearer_token: str) -> str:
    """Policies hold a hash of each MCP bearer token, never the token itself."""
    return "mcp-token:" + hashlib.sha256(bearer_token.encode()).hexdigest()


def oidc_principal(issuer: str, subject: str) -> str:
    """An OAuth access token's caller: its subject, qualified by the issuer that vouches for it."""
    return f"oidc:{issuer}#{subject}"


def default_policy() -> Policy:
    return Policy(people=[Person(id=os_user(), roles=[Role.OPERATOR], principals=[os_principal()])])


def load_policy(path: Path, *, required: bool) -> Policy:
    """The policy at ``path``; when it is absent and not ``required``, the safe default."""
    if not path.exists():
        if required:
            raise ConfigurationError(f"policy file {path} does not exist (FLEXUS_POLICY)")
        return default_policy()
    # Who may do what must come from this user or root (an admin's /etc file), never from a file
    # another user could have written.
    trusted(path, "policy file", root_may_own=True)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        policy = Policy.model_validate(data)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"policy file {path}: not valid TOML: {exc}") from None
    except (ValidationError, ValueError) as exc:
        raise ConfigurationError(f"policy file {path}: {exc}") from None
    policy.source = str(path)
    return policy
