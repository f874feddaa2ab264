"""Every error flexus-ops raises, on the ground floor so that every layer can raise and catch them.

``FlexusError``
 - ``InvalidInput``: refused before anything was sent; names the field and the rule.
 - ``ConfigurationError``: the settings cannot work (e.g. an endpoint without credentials).
   ``MissingExtra``: a surface or store whose optional packages are not installed; names the extra.
 - ``CloudError``: the cloud answered with an error (status, code, message, request id).
   ``AuthenticationError`` 401, ``PermissionDenied`` 403, ``NotFound`` 404, ``Throttled`` 429,
   ``BadRequest`` other 4xx, ``ServiceError`` 5xx.
 - ``TransportError``: no answer (connection refused, timeout). ``may_have_applied`` tells whether
   a write could have reached the cloud, so callers reconcile instead of re-sending blindly.
 - ``JobTimeout``: a job did not finish in the time allowed.
 - ``StoreError``: the gate's store (database, state dir) failed; says which, why and what to do.
 - ``Refused``: the gate said no; the message says why and what to do instead.
 - ``OutcomeUnknown``: a change was sent but its outcome is not known (a lost answer, a store that
   failed after sending); it is settled by observation later, never re-sent.

Every message is one line a person can act on: the component, the cause, the next step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, get_args

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

MAX_MESSAGE_CHARS = 500


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Never echo an unbounded input back (a megabyte name must not become a megabyte error)."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


class FlexusError(Exception):
    """Base of every error raised by flexus-ops."""


class InvalidInput(FlexusError, ValueError):
    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = bounded(rule, 300)
        super().__init__(f"{field}: {self.rule}")


class ConfigurationError(FlexusError):
    pass


class MissingExtra(ConfigurationError):
    """A feature whose optional dependencies (a pip extra) are not installed: says how to install them."""

    def __init__(self, feature: str, extra: str, missing: list[str]) -> None:
        self.extra = extra
        self.missing = missing
        super().__init__(
            f"{feature} needs the [{extra}] extra ({', '.join(missing)} not installed): "
            f"pip install 'flexus-ops[{extra}]'"
        )


def require_extra(feature: str, extra: str, modules: tuple[str, ...]) -> None:
    """Raise ``MissingExtra`` unless every module can be imported. Looks them up without importing them,
    so a check costs nothing when the extra is there."""
    from importlib.util import find_spec

    missing = [name for name in modules if find_spec(name) is None]
    if missing:
        raise MissingExtra(feature, extra, missing)


class CloudError(FlexusError):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        request_id: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = bounded(message)
        self.request_id = request_id
        self.details = details or []
        where = f" (request {request_id})" if request_id else ""
        super().__init__(f"{status} {code}: {self.message}{where}")


class BadRequest(CloudError):
    pass


class AuthenticationError(CloudError):
    pass


class PermissionDenied(CloudError):
    pass


class NotFound(CloudError):
    pass


class Throttled(CloudError):
    pass


class ServiceError(CloudError):
    pass


class TransportError(FlexusError):
    def __init__(self, message: str, *, may_have_applied: bool) -> None:
        self.may_have_applied = may_have_applied
        suffix = (
            " The request may have been applied; check the server state before retrying." if (may_have_applied) else ""
        )
        super().__init__(bounded(message) + suffix)


class JobTimeout(FlexusError):
    def __init__(self, job_id: str, waited_seconds: float, last_status: str | None) -> None:
        self.job_id = job_id
        self.last_status = last_status
        super().__init__(
            f"job {job_id} still {last_status or 'unknown'} after {waited_seconds:.0f}s; "
            "it keeps running in the cloud: query it again with show_job"
        )


class StoreError(FlexusError):
    """The store could not be used: unreachable, locked, read-only, timed out, or a bad state dir."""

    def __init__(self, cause: str, next_step: str) -> None:
        self.cause = bounded(cause, 300)
        super().__init__(f"store: {self.cause}; {next_step}")


class OutcomeUnknown(FlexusError):
    """A change was sent to the cloud but whether it applied is not known yet. Never retry it blindly:
    it is settled by observation (the job, or the servers' state), then recorded as applied or not."""

    def __init__(self, message: str, action_id: str | None = None) -> None:
        self.action_id = action_id
        super().__init__(bounded(message))


class Refused(FlexusError):
    """The gate said no; the message says why and what to do instead."""


def input_error(exc: ValidationError, model: type[BaseModel], *, arguments_of: str = "this tool") -> InvalidInput:
    """Pydantic's first error as field + rule, without echoing the (possibly huge or secret) input: the
    one translation for tool arguments and cloud request models alike."""
    first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or model.__name__
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        *parents, _unknown = first["loc"]
        owner = _model_at(model, [str(part) for part in parents])
        allowed = ", ".join(owner.model_fields)
        if parents:  # a nested object (select, waves): its own fields, not the tool's
            message = f"is not a field of {'.'.join(str(part) for part in parents)} (fields: {allowed})"
        else:
            message = f"is not an argument of {arguments_of} (arguments: {allowed})"
    return InvalidInput(field, message)


def _model_at(model: type[BaseModel], path: list[str]) -> type[BaseModel]:
    """The model a nested location belongs to (``select`` -> Selection), through Optional and Annotated."""
    from pydantic import BaseModel  # here only: the ground floor loads pydantic when it must explain an error

    for name in path:
        field = model.model_fields.get(name)
        candidates = [field.annotation] if field is not None else []
        while candidates:
            kind = candidates.pop()
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                model = kind
                break
            candidates.extend(get_args(kind))
        else:
            return model
    return model
