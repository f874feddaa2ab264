"""Input models of the tools. Every rule of the reference is here (through ``cloud.rules``), so a bad
argument is refused with the field and the rule before anything is read or written.

Field descriptions are short on purpose: the whole catalog is sent to the model on every turn.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from ..cloud import rules
from ..cloud.models import PowerType
from ..core.plans import Waves
from ..core.tools import ToolInput

MAX_TARGET_CHARS = 64  # a UUID is 36, a name at most 64


def _target(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    if len(value) > MAX_TARGET_CHARS:
        raise ValueError(f"must be a server id or name of at most {MAX_TARGET_CHARS} characters")
    return value


def _unique(values: list[str]) -> list[str]:
    seen: set[str] = set()
    for index, value in enumerate(values):
        if value in seen:
            raise ValueError(f"item {index}: {value!r} is listed twice")
        seen.add(value)
    return values


ServerRef = Annotated[str, Field(max_length=MAX_TARGET_CHARS), AfterValidator(_target)]
ServerRefs = Annotated[
    list[ServerRef],
    Field(min_length=1, max_length=rules.MAX_SERVERS_PER_REQUEST, description="server ids or exact names"),
    AfterValidator(_unique),
]
Status = rules.Status
ShortText = Annotated[str, Field(max_length=128)]


class GatedInput(ToolInput):
    """Fields of the gate; they are never part of the arguments a confirmation is bound to."""

    dry_run: bool = Field(False, description="only preview; never changes anything")
    confirmation_token: Annotated[str, Field(max_length=256)] | None = Field(
        None, description="token from the preview, to confirm it"
    )


class ShowServerInput(ToolInput):
    server: ServerRef
    full: bool = Field(False, description="every API field instead of the summary")


class ListServersInput(ToolInput):
    name: ShortText | None = Field(None, description="substring of the name")
    status: Status | None = None
    ip: ShortText | None = Field(None, description="substring of an IPv4 address")
    ip_eq: ShortText | None = Field(None, description="exact IPv4 address")
    tag: ShortText | None = Field(None, description="has tag 'key=value' or 'key'")
    not_tag: ShortText | None = Field(None, description="lacks this tag")
    flavor: ShortText | None = None
    enterprise_project_id: ShortText | None = None
    reservation_id: ShortText | None = None
    server_ids: (
        Annotated[
            list[rules.ServerId],
            Field(min_length=1, max_length=rules.MAX_SERVERS_PER_REQUEST),
        ]
        | None
    ) = Field(None, description="exact ids; other filters are then ignored")
    page: int = Field(1, ge=1, le=100_000, description="page number")
    limit: int = Field(50, ge=1, le=rules.MAX_PAGE_SIZE, description="servers per page")
    full: bool = Field(False, description="every API field instead of the summary")


class PowerInput(GatedInput):
    servers: ServerRefs
    wait: bool | None = Field(None, description="wait for the end (default: yes; with waves: no)")
    waves: Waves | None = Field(None, description="roll out in waves")


class StartServersInput(PowerInput):
    pass


class StopServersInput(PowerInput):
    type: PowerType = Field("SOFT", description="SOFT (clean shutdown) or HARD (forced)")


class RebootServersInput(PowerInput):
    type: PowerType = Field("SOFT", description="SOFT (clean) or HARD (forced)")


class ResetPasswordInput(GatedInput):
    servers: ServerRefs
    new_password: SecretStr | None = Field(
        None,
        description="8-26 chars, 3 of upper/lower/digit/special !@%-_=+[]:./?; omit to generate one",
        json_schema_extra={"format": "password", "writeOnly": True},
    )
    reason: Annotated[str, Field(min_length=3, max_length=200)] = Field(description="why, shown to the approver")

    @field_validator("new_password")
    @classmethod
    def _password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and (problem := rules.problem_with_password(value.get_secret_value())):
            raise ValueError(problem)
        return value


UPDATABLE = ("name", "description", "hostname", "user_data")
"""What flexus_update_server can change (security_options is not offered)."""


class UpdateServerInput(GatedInput):
    server: ServerRef
    name: rules.ServerName | None = None
    description: rules.Description | None = None
    hostname: rules.Hostname | None = Field(None, description="takes effect after a reboot")
    user_data: rules.UserData | None = Field(None, description="base64, at most 32 KB decoded")

    @model_validator(mode="after")
    def _something_to_change(self) -> UpdateServerInput:
        if all(getattr(self, name) is None for name in UPDATABLE):
            raise ValueError(f"set at least one of {', '.join(UPDATABLE)}")
        return self


class ShowJobInput(ToolInput):
    job_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
    wait: bool = Field(False, description="wait until the job ends")


class ShowActionInput(ToolInput):
    action_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9]+$")] = Field(
        description="the action_id of a preview or result"
    )
