"""Configuration from the environment, with the official SDK's variable names where they exist.

Resolution of the ECS endpoint, first match wins:
1. ``FLEXUS_ECS_ENDPOINT`` (any base URL; plain http only for loopback hosts);
2. ``HUAWEICLOUD_SDK_REGION_ECS_<REGION>`` (the SDK's override; the first of a comma list);
3. ``https://ecs.<region>.myhuaweicloud.com`` when credentials are set;
4. otherwise the embedded sandbox cloud, and every surface says so.

Every secret setting ``NAME`` may instead be given as ``NAME_FILE``, the path of a file holding it (as
container images take Docker and compose secrets, mounted under ``/run/secrets/``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, get_args
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from .core.errors import ConfigurationError
from .core.telemetry import LOG_FORMATS, LOG_LEVELS


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/flexus-ops``, else ``~/.local/state/flexus-ops``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "flexus-ops"


class AuthMode(StrEnum):
    AKSK = "aksk"
    TOKEN = "token"  # noqa: S105 - a mode name, not a secret
    SANDBOX = "sandbox"


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


# Every Huawei Cloud region name has this shape (cn-north-4, ap-southeast-1, la-south-2, ...). The region
# becomes part of hostnames (ecs.<region>.myhuaweicloud.com), so anything else ('x@evil:9/', 'a.evil.com')
# could point signed requests, or an IAM password, at another host.
REGION_PATTERN = re.compile(r"^[a-z]{2}(-[a-z0-9]+)+$")


FILE_SUFFIX = "_FILE"


# Marks a plain setting that may hold a secret all the same (a database URL with its password).
SECRET_BEARING: dict[str, Any] = {"secret_bearing": True}
ASCII_CREDENTIALS = frozenset({"HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK", "HUAWEICLOUD_SDK_SECURITY_TOKEN"})


def secret_variables(settings_cls: type[BaseSettings]) -> dict[str, str]:
    """``{field name: its environment variable}`` for every secret setting of ``settings_cls`` (``SecretStr``,
    or marked ``SECRET_BEARING``): those ``NAME_FILE`` may stand for. The variable is the field's first alias."""
    found = {}
    for name, field in settings_cls.model_fields.items():
        secret = (
            SecretStr in (field.annotation, *get_args(field.annotation)) or field.json_schema_extra == SECRET_BEARING
        )
        if secret and isinstance(field.validation_alias, AliasChoices):
            found[name] = str(field.validation_alias.choices[0]).upper()
    return found


def read_secret_file(variable: str, path: str) -> str:
    """The secret in the file ``$variable`` names, less one trailing newline (``echo`` and editors add one).
    An error names the variable and the path, never the content."""
    file_variable = variable + FILE_SUFFIX
    if not path.strip():
        raise ConfigurationError(f"{file_variable} is set but empty: give the path of a file holding {variable}")
    try:
        content = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigurationError(f"{file_variable}: {path[:200]} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigurationError(
            f"{file_variable}: cannot read {path[:200]} ({exc.strerror or type(exc).__name__}); "
            f"it must be a readable file holding {variable}"
        ) from None
    value = content.removesuffix("\n").removesuffix("\r")
    if not value:
        raise ConfigurationError(f"{file_variable}: {path[:200]} is empty; it must hold {variable}")
    return value


class SecretFileSource(PydanticBaseSettingsSource):
    """``NAME_FILE`` for each secret setting ``NAME``: the value is read from that file. Setting both
    ``NAME`` and ``NAME_FILE`` is an error (which one wins would be a guess)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads every secret at once

    def __call__(self) -> dict[str, Any]:
        environment = {name.upper(): value for name, value in os.environ.items()}
        values: dict[str, Any] = {}
        for field_name, variable in secret_variables(self.settings_cls).items():
            path = environment.get(variable + FILE_SUFFIX)
            if path is None:
                continue
            if variable in environment:
                raise ConfigurationError(
                    f"both {variable} and {variable}{FILE_SUFFIX} are set: set only one (the value, or a file with it)"
                )
            values[field_name] = read_secret_file(variable, path)
        return values


class EnvSettings(BaseSettings):
    """Settings from the environment, where every secret may also come from a file (``NAME_FILE``)."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, populate_by_name=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, SecretFileSource(settings_cls), env_settings, dotenv_settings, file_secret_settings

    @model_validator(mode="after")
    def _secrets_are_one_clean_line(self) -> EnvSettings:
        """A secret with a line break or another control character (a second line in its file, a paste)
        would reach an HTTP header the library refuses, and its error quotes the header: refused here,
        naming the variable, never the value. Header credentials must be printable ASCII too."""
        for field_name, variable in secret_variables(type(self)).items():
            value = getattr(self, field_name)
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if not isinstance(text, str):
                continue
            if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text):
                raise ValueError(
                    f"{variable}: contains a line break or another control character; a secret is one line "
                    f"(if it comes from {variable}{FILE_SUFFIX}, the file may hold only the secret and one newline)"
                )
            if variable in ASCII_CREDENTIALS and not text.isascii():
                raise ValueError(f"{variable}: must be ASCII (it travels in an HTTP header); check its value or file")
        return self


class Settings(EnvSettings):
    access_key: SecretStr | None = Field(None, validation_alias=_env("HUAWEICLOUD_SDK_AK", "access_key"))
    secret_key: SecretStr | None = Field(None, validation_alias=_env("HUAWEICLOUD_SDK_SK", "secret_key"))
    security_token: SecretStr | None = Field(
        None, validation_alias=_env("HUAWEICLOUD_SDK_SECURITY_TOKEN", "security_token")
    )
    project_id: str | None = Field(None, validation_alias=_env("HUAWEICLOUD_SDK_PROJECT_ID", "project_id"))
    region: str = Field("cn-north-4", validation_alias=_env("FLEXUS_REGION", "region"))
    ecs_endpoint: str | None = Field(None, validation_alias=_env("FLEXUS_ECS_ENDPOINT", "ecs_endpoint"))
    iam_endpoint: str | None = Field(None, validation_alias=_env("FLEXUS_IAM_ENDPOINT", "iam_endpoint"))
    # IAM password-token authentication, the alternative to AK/SK.
    iam_domain: str | None = Field(None, validation_alias=_env("FLEXUS_IAM_DOMAIN", "iam_domain"))
    iam_user: str | None = Field(None, validation_alias=_env("FLEXUS_IAM_USER", "iam_user"))
    iam_password: SecretStr | None = Field(None, validation_alias=_env("FLEXUS_IAM_PASSWORD", "iam_password"))

    timeout_seconds: float = Field(30.0, gt=0, le=3600, validation_alias=_env("FLEXUS_HTTP_TIMEOUT", "timeout_seconds"))
    retry_attempts: int = Field(4, ge=0, le=10, validation_alias=_env("FLEXUS_RETRY_ATTEMPTS", "retry_attempts"))
    retry_base_seconds: float = Field(
        2.0, ge=0, validation_alias=_env("FLEXUS_RETRY_BASE_SECONDS", "retry_base_seconds")
    )
    retry_max_seconds: float = Field(30.0, ge=0, validation_alias=_env("FLEXUS_RETRY_MAX_SECONDS", "retry_max_seconds"))
    read_deadline_seconds: float = Field(
        60.0, gt=0, le=3600, validation_alias=_env("FLEXUS_READ_DEADLINE", "read_deadline_seconds")
    )
    job_poll_seconds: float = Field(1.0, gt=0, validation_alias=_env("FLEXUS_JOB_POLL_SECONDS", "job_poll_seconds"))
    job_poll_max_seconds: float = Field(
        10.0, gt=0, validation_alias=_env("FLEXUS_JOB_POLL_MAX_SECONDS", "job_poll_max_seconds")
    )
    job_wait_seconds: float = Field(
        900.0, gt=0, le=86_400, validation_alias=_env("FLEXUS_JOB_WAIT_SECONDS", "job_wait_seconds")
    )
    max_concurrency: int = Field(16, ge=1, le=256, validation_alias=_env("FLEXUS_MAX_CONCURRENCY", "max_concurrency"))
    # The embedded sandbox's fleet, when it is used.
    sandbox_servers: int = Field(30, ge=0, validation_alias=_env("FLEXUS_SANDBOX_SERVERS", "sandbox_servers"))
    sandbox_seed: int = Field(7, validation_alias=_env("FLEXUS_SANDBOX_SEED", "sandbox_seed"))
    sandbox_job_seconds: float = Field(
        2.0, ge=0, validation_alias=_env("FLEXUS_SANDBOX_JOB_SECONDS", "sandbox_job_seconds")
    )

    # The store's bounds: a database that is down or hung fails a call clearly instead of stalling it.
    db_connect_timeout_seconds: float = Field(
        10.0, gt=0, le=300, validation_alias=_env("FLEXUS_DB_CONNECT_TIMEOUT", "db_connect_timeout_seconds")
    )
    db_statement_timeout_seconds: float = Field(
        10.0, gt=0, le=300, validation_alias=_env("FLEXUS_DB_STATEMENT_TIMEOUT", "db_statement_timeout_seconds")
    )
    # An execution's owner renews its lease while the call is in flight; a dead owner's lease runs out
    # after this, and only then may another process settle its execution.
    lease_seconds: float = Field(10.0, ge=1, le=600, validation_alias=_env("FLEXUS_LEASE_SECONDS", "lease_seconds"))
    settle_interval_seconds: float = Field(
        30.0, gt=0, le=3600, validation_alias=_env("FLEXUS_SETTLE_SECONDS", "settle_interval_seconds")
    )

    # Long-running commands (mcp, slack, sim): how much they log, and as text or one JSON object per line.
    log_level: str = Field("info", validation_alias=_env("FLEXUS_LOG_LEVEL", "log_level"))
    log_format: str = Field("text", validation_alias=_env("FLEXUS_LOG_FORMAT", "log_format"))

    # The gate: where its state lives, who may do what, and the secrets replicas must share.
    state_dir: Path = Field(
        default_factory=lambda: default_state_dir(), validation_alias=_env("FLEXUS_STATE_DIR", "state_dir")
    )
    store_url: str | None = Field(
        None, validation_alias=_env("FLEXUS_STORE_URL", "store_url"), json_schema_extra=SECRET_BEARING
    )
    policy_path: Path | None = Field(None, validation_alias=_env("FLEXUS_POLICY", "policy_path"))
    token_key: SecretStr | None = Field(None, validation_alias=_env("FLEXUS_TOKEN_KEY", "token_key"))
    encryption_key: SecretStr | None = Field(None, validation_alias=_env("FLEXUS_ENCRYPTION_KEY", "encryption_key"))
    mcp_state_key: SecretStr | None = Field(None, validation_alias=_env("FLEXUS_MCP_STATE_KEY", "mcp_state_key"))
    audit_key: SecretStr | None = Field(None, validation_alias=_env("FLEXUS_AUDIT_KEY", "audit_key"))
    # Earlier audit keys (comma list), kept so records written under them still verify.
    audit_previous_keys: SecretStr | None = Field(
        None, validation_alias=_env("FLEXUS_AUDIT_PREVIOUS_KEYS", "audit_previous_keys")
    )

    # MCP over HTTP for a team: the URL clients reach it at, the Host names it answers to (behind a load
    # balancer or in compose the Host is not loopback), and OAuth access tokens from one issuer.
    public_url: str | None = Field(None, validation_alias=_env("FLEXUS_PUBLIC_URL", "public_url"))
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("FLEXUS_ALLOWED_HOSTS", "allowed_hosts")
    )
    oauth_issuer: str | None = Field(None, validation_alias=_env("FLEXUS_OAUTH_ISSUER", "oauth_issuer"))
    oauth_audience: str | None = Field(None, validation_alias=_env("FLEXUS_OAUTH_AUDIENCE", "oauth_audience"))
    oauth_jwks_url: str | None = Field(None, validation_alias=_env("FLEXUS_OAUTH_JWKS_URL", "oauth_jwks_url"))

    @field_validator("public_url")
    @classmethod
    def _public_url_shape(cls, value: str | None) -> str | None:
        return checked_public_url(value, "FLEXUS_PUBLIC_URL") if value else None

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _allowed_hosts_shape(cls, value: Any) -> list[str]:
        names = value.split(",") if isinstance(value, str) else list(value or [])
        return [checked_allowed_host(name.strip(), "FLEXUS_ALLOWED_HOSTS") for name in names if name.strip()]

    @field_validator("oauth_issuer")
    @classmethod
    def _issuer_shape(cls, value: str | None) -> str | None:
        return checked_oauth_url(value, "FLEXUS_OAUTH_ISSUER") if value else None

    @field_validator("oauth_jwks_url")
    @classmethod
    def _jwks_shape(cls, value: str | None) -> str | None:
        return checked_oauth_url(value, "FLEXUS_OAUTH_JWKS_URL") if value else None

    @model_validator(mode="after")
    def _oauth_needs_an_issuer(self) -> Settings:
        if not self.oauth_issuer:
            for name, value in (
                ("FLEXUS_OAUTH_AUDIENCE", self.oauth_audience),
                ("FLEXUS_OAUTH_JWKS_URL", self.oauth_jwks_url),
            ):
                if value:
                    raise ValueError(f"{name}: is set but FLEXUS_OAUTH_ISSUER is not; OAuth needs the issuer")
        return self

    @field_validator("region")
    @classmethod
    def _region_shape(cls, value: str) -> str:
        if not REGION_PATTERN.fullmatch(value):
            raise ValueError(
                f"FLEXUS_REGION: {value[:100]!r} is not a region name like 'cn-north-4' (lower-case letters, digits "
                "and dashes: ^[a-z]{2}(-[a-z0-9]+)+$); to reach another host use FLEXUS_ECS_ENDPOINT"
            )
        return value

    @field_validator("log_level", "log_format")
    @classmethod
    def _log_choice(cls, value: str, info: ValidationInfo) -> str:
        choices = LOG_LEVELS if info.field_name == "log_level" else LOG_FORMATS
        if value.lower() not in choices:
            raise ValueError(f"FLEXUS_{str(info.field_name).upper()}: must be one of {', '.join(choices)}")
        return value.lower()

    @classmethod
    def load(cls, **values: object) -> Settings:
        """Settings from the environment, with a bad value reported as the variable and the rule."""
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValidationError as exc:
            raise settings_error(exc) from None

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or f"sqlite:///{self.state_dir / 'flexus.db'}"

    @property
    def has_aksk(self) -> bool:
        return self.access_key is not None and self.secret_key is not None

    @property
    def has_iam_password(self) -> bool:
        return bool(self.iam_user and self.iam_password and self.iam_domain)

    @property
    def auth_mode(self) -> AuthMode:
        if self.has_aksk:
            return AuthMode.AKSK
        if self.has_iam_password:
            return AuthMode.TOKEN
        if self.ecs_endpoint or self._region_override():
            raise ConfigurationError(
                "an ECS endpoint is configured but no credentials: set HUAWEICLOUD_SDK_AK and "
                "HUAWEICLOUD_SDK_SK, or FLEXUS_IAM_DOMAIN, FLEXUS_IAM_USER and FLEXUS_IAM_PASSWORD"
            )
        if (self.access_key is None) != (self.secret_key is None):
            raise ConfigurationError("set both HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK, not only one")
        return AuthMode.SANDBOX

    @property
    def uses_sandbox(self) -> bool:
        return self.auth_mode is AuthMode.SANDBOX

    def _region_override_name(self) -> str:
        return "HUAWEICLOUD_SDK_REGION_ECS_" + self.region.upper().replace("-", "_")

    def _region_override(self) -> str | None:
        value = os.environ.get(self._region_override_name(), "").strip()
        return value.split(",")[0].strip() or None if value else None

    def ecs_base_url(self) -> str | None:
        """The ECS endpoint, or None for the embedded sandbox."""
        if self.uses_sandbox:
            return None
        if self.ecs_endpoint:
            return checked_endpoint(self.ecs_endpoint, "FLEXUS_ECS_ENDPOINT")
        override = self._region_override()
        if override:
            return checked_endpoint(override, self._region_override_name())
        # The region was validated as a plain region name, so this names Huawei's host and no other.
        return f"https://ecs.{self.region}.myhuaweicloud.com"

    def iam_base_url(self) -> str | None:
        if self.uses_sandbox:
            return None
        if self.iam_endpoint:
            return checked_endpoint(self.iam_endpoint, "FLEXUS_IAM_ENDPOINT")
        if self.ecs_endpoint:
            # A custom ECS endpoint (a private cloud, or `flexus-ops sim`) serves IAM on the same host.
            return checked_endpoint(self.ecs_endpoint, "FLEXUS_ECS_ENDPOINT")
        return f"https://iam.{self.region}.myhuaweicloud.com"

    def target_summary(self) -> str:
        """The cloud target for a start-up line: ``sandbox``, or the region and the endpoint's scheme, host
        and port (never user info, a path's secrets or credentials)."""
        if self.uses_sandbox:
            return "sandbox"
        parts = urlsplit(self.ecs_base_url() or "")
        host = parts.hostname or ""
        return f"{self.region} {parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"

    @property
    def store_kind(self) -> str:
        """``sqlite`` or ``postgresql``: the kind of store, never its URL (which may hold a password)."""
        scheme = self.resolved_store_url.split(":", 1)[0].lower()
        return scheme.split("+", 1)[0]

    def describe_target(self) -> str:
        """One line that every surface shows, so nobody mistakes the sandbox for the real cloud."""
        if self.uses_sandbox:
            return "SANDBOX cloud (embedded simulator, no real servers are touched)"
        return f"Huawei Cloud {self.region} at {self.ecs_base_url()} ({self.auth_mode.value} auth)"


def settings_error(exc: ValidationError) -> ConfigurationError:
    """The first bad setting as one line: the variable, the rule, never the (possibly secret) value."""
    first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    message = first["msg"].removeprefix("Value error, ")
    field = str(first["loc"][0]) if first["loc"] else "settings"
    if message.startswith(f"{field.upper()}:") or ":" in message.split(" ", 1)[0]:
        return ConfigurationError(message)
    return ConfigurationError(f"{field.upper()}: {message}")


def checked_endpoint(url: str, variable: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{variable}: must be an http(s) base URL, got {url[:200]!r}")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigurationError(
            f"{variable}: plain http is allowed only for loopback hosts (credentials would travel in clear)"
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{variable}: a base URL takes no query or fragment")
    return url.rstrip("/")


def _http_url(url: str, variable: str) -> tuple[str, str]:
    """(scheme, host) of an http(s) URL that may be plain http only on loopback, else a ConfigurationError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{variable}: must be an http(s) URL, got {url[:200]!r}")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigurationError(f"{variable}: must be https (plain http is allowed only for loopback hosts)")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigurationError(f"{variable}: takes no query, fragment or user:password@")
    return parts.scheme, parts.hostname


def checked_oauth_url(url: str, variable: str) -> str:
    """An OAuth issuer or JWKS URL: https (http only on loopback), kept exactly as given, because an issuer
    is compared character for character with the ``iss`` of every token (RFC 8414, OIDC Discovery)."""
    _http_url(url, variable)
    return url


def checked_public_url(url: str, variable: str) -> str:
    """The URL clients reach the MCP HTTP server at, as scheme://host[:port] (the endpoint is <url>/mcp).

    No path: the protected resource metadata lives at the root of the host (RFC 9728), and a path prefix
    would need a proxy that rewrites it."""
    _http_url(url, variable)
    parts = urlsplit(url)
    if parts.path not in ("", "/"):
        raise ConfigurationError(
            f"{variable}: give the server's base URL without a path, like https://flexus.example.com "
            f"(clients use <base>/mcp), got {url[:200]!r}"
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigurationError(f"{variable}: a base URL takes no user, query or fragment")
    host = parts.hostname or ""
    checked_allowed_host(host if ":" not in host else f"[{host}]", variable)  # one exact name, no wildcard
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError(f"{variable}: the port must be a number from 1 to 65535") from None
    # Canonical (RFC 3986: lower-case host, no default port): the metadata advertises this resource, and
    # a client asks its identity provider for exactly it, so the audience checked must be the same string.
    default = {"https": 443, "http": 80}[parts.scheme]
    netloc = (host if ":" not in host else f"[{host}]") + (f":{port}" if port not in (None, default) else "")
    return f"{parts.scheme}://{netloc}"


# A Host header value: a DNS name or IPv4 address, or a bracketed IPv6 address, with an optional port.
ALLOWED_HOST_PATTERN = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$"
)


def checked_allowed_host(name: str, variable: str) -> str:
    """A Host header value the DNS-rebinding check may accept: one exact name, never a pattern."""
    if not ALLOWED_HOST_PATTERN.fullmatch(name):
        raise ConfigurationError(
            f"{variable}: {name[:100]!r} is not a host name like flexus.example.com or flexus:8765 "
            "(no scheme, path or wildcard)"
        )
    return name.lower()


def is_loopback(host: str) -> bool:
    """The one test of "only this machine can reach it" (endpoints over plain http, servers we bind)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
