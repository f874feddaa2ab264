"""Input models of the tools. Every rule of the reference is here (through ``cloud.rules``), so a bad
argument is refused with the field and the rule before anything is read or written.

Field descriptions are short on purpose: the whole catalog is sent to the model on every turn.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field, SecretStr, WithJsonSchema, field_validator, model_validator

from ..cloud import rules
from ..cloud.models import PowerType
from ..core.plans import Waves
from ..core.tools import ToolInput

MAX_TARGET_CHARS = rules.MAX_NAME_UNITS  # a UUID is 36, a name at most 128 characters


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

    dry_run: bool = Field(False, description="preview only")
    confirmation_token: Annotated[str, Field(max_length=256)] | None = Field(
        None, description="from the preview, to confirm it"
    )


class ShowServerInput(ToolInput):
    server: ServerRef
    full: bool = Field(False, description="every API field instead of the summary")


class ListServersInput(ToolInput):
    name: ShortText | None = Field(
        None, description="fuzzy match on the name; '.' matches any one character (so 'web.01' finds web-01)"
    )
    status: Status | None = Field(
        None,
        description=(
            "ACTIVE also finds REBOOT, HARD_REBOOT, REBUILD, MIGRATING, RESIZE; SHUTOFF: RESIZE, REBUILD; "
            "ERROR: REBUILD; VERIFY_RESIZE: REVERT_RESIZE"
        ),
    )
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


# -- which servers a change acts on: a list, a selection by filter, or the servers of an earlier change --

SELECTION_FILTERS = ("name", "status", "tag", "not_tag", "flavor", "ip", "ip_eq", "enterprise_project_id")


class Selection(ToolInput):
    """Servers by the listing's filters, resolved against the live fleet at preview and again at
    confirmation. ``name`` is a prefix here (the API's own name filter is fuzzy: too loose for a change)."""

    name: ShortText | None = None
    status: ShortText | None = None
    tag: ShortText | None = None
    not_tag: ShortText | None = None
    flavor: ShortText | None = None
    ip: ShortText | None = None
    ip_eq: ShortText | None = None
    enterprise_project_id: ShortText | None = None

    @field_validator("status")
    @classmethod
    def _status(cls, value: str | None) -> str | None:
        if value is not None and (problem := rules.problem_with_status(value)):
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _some_filter(self) -> Selection:
        if not self.filters():
            raise ValueError(f"needs at least one filter of: {', '.join(SELECTION_FILTERS)}")
        return self

    def filters(self) -> dict[str, str]:
        return {name: value for name in SELECTION_FILTERS if (value := getattr(self, name)) is not None}

    def describe(self) -> str:
        # name=web* (a glob people know): the name filter of a selection is a prefix.
        return " ".join(f"{name}={value}{'*' if name == 'name' else ''}" for name, value in self.filters().items())


# Published once, compactly: the catalog carries it on four tools and is resent on every turn. Validation
# uses the full model above.
SELECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "flexus_list_servers' filters; name: a prefix",
}
Select = Annotated[Selection | None, WithJsonSchema(SELECT_SCHEMA)]
# The fields a model fills in, inline (a $ref would cost its $defs on every tool that rolls out); the
# ranges and defaults are the model's (core.plans.Waves), checked with the field and the rule.
WAVES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "in waves; defaults: pause_seconds 0, stop_on_failure true",
    "properties": {
        "size": {"type": "integer"},
        "pause_seconds": {"type": "number"},
        "stop_on_failure": {"type": "boolean"},
    },
    "required": ["size"],
}
ActionId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9]+$")]


class TargetedInput(GatedInput):
    """A change on several servers: exactly one of ``servers``, ``select`` or (where the tool can be an
    inverse) ``undo_of``."""

    TARGETS: ClassVar[tuple[str, ...]] = ("servers", "select", "undo_of")

    servers: ServerRefs | None = None
    select: Select = None

    @model_validator(mode="after")
    def _exactly_one_target(self) -> TargetedInput:
        offered = [name for name in self.TARGETS if name in type(self).model_fields]
        given = [name for name in offered if getattr(self, name) is not None]
        if len(given) != 1:
            said = "none" if not given else " and ".join(given)
            raise ValueError(f"give exactly one of {', '.join(offered)} (got {said})")
        return self


class PowerInput(TargetedInput):
    wait: bool | None = Field(None, description="wait for the end (default: yes; with waves: no)")
    waves: Annotated[Waves | None, WithJsonSchema(WAVES_SCHEMA)] = None


class StartServersInput(PowerInput):
    undo_of: ActionId | None = Field(None, description="a finished stop's action_id")


class StopServersInput(PowerInput):
    type: PowerType = Field("SOFT", description="SOFT (clean shutdown) or HARD (forced)")
    undo_of: ActionId | None = Field(None, description="a finished start's action_id")


class RebootServersInput(PowerInput):
    type: PowerType = Field("SOFT", description="SOFT (clean) or HARD (forced)")


class ResetPasswordInput(TargetedInput):
    new_password: SecretStr | None = Field(
        None,
        description=(
            "8-26 chars, 3 of upper/lower/digit/special !@%-_=+[]:./?; not root/toor (Linux), not "
            "Administrator, reversed, or 3 consecutive letters of it (Windows); omit to generate one"
        ),
        json_schema_extra={"format": "password", "writeOnly": True},
    )
    reason: Annotated[str, Field(min_length=3, max_length=200)] = Field(description="why, shown to the approver")

    @field_validator("new_password")
    @classmethod
    def _password(cls, value: SecretStr | None) -> SecretStr | None:
        # The user-name rules depend on each server's OS: the preview checks them once the servers are read.
        if value is not None and (problem := rules.problem_with_password_format(value.get_secret_value())):
            raise ValueError(problem)
        return value


UPDATABLE = ("name", "description", "hostname", "user_data")
"""What flexus_update_server can change (security_options is not offered)."""


class UpdateServerInput(GatedInput):
    server: ServerRef | None = None
    name: rules.ServerName | None = Field(
        None, description="1-128 of letters, digits, Chinese, _ - . (a Chinese character counts as two)"
    )
    description: rules.Description | None = None
    hostname: rules.Hostname | None = Field(None, description="deprecated by the API; takes effect after a reboot")
    # Sealed in the store between preview and execution, as a password is.
    user_data: rules.SealedUserData | None = Field(
        None, description="base64, at most 32 KB decoded", json_schema_extra={"writeOnly": True}
    )
    undo_of: ActionId | None = Field(None, description="a finished update's action_id")

    @model_validator(mode="after")
    def _something_to_change(self) -> UpdateServerInput:
        changing = [name for name in UPDATABLE if getattr(self, name) is not None]
        if self.undo_of is not None:
            if self.server is not None or changing:
                raise ValueError("undo_of takes nothing else: the action says which server and what to put back")
            return self
        if self.server is None:
            raise ValueError("give server (and what to change) or undo_of")
        if not changing:
            raise ValueError(f"set at least one of {', '.join(UPDATABLE)}")
        return self


class ShowJobInput(ToolInput):
    job_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
    wait: bool = Field(False, description="wait until the job ends")


class ShowActionInput(ToolInput):
    action_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9]+$")] = Field(
        description="the action_id of a preview or result"
    )
