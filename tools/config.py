"""Configuration from the environment, with the official SDK's variable names where they exist.

Resolution of the ECS endpoint, first match wins:
1. ``FLEXUS_ECS_ENDPOINT`` (any base URL; plain http only for loopback hosts);
2. ``HUAWEICLOUD_SDK_REGION_ECS_<REGION>`` (the SDK's override; the first of a comma list);
3. ``https://ecs.<region>.myhuaweicloud.com`` when credentials are set;
4. otherwise the embedded sandbox cloud, and every surface says so.
"""

from __future__ import annotations

import ipaddress
import os
import re
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, populate_by_name=True)

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
    store_url: str | None = Field(None, validation_alias=_env("FLEXUS_STORE_URL", "store_url"))
    policy_path: Path | None = Field(None, validation_alias=_env("FLEXUS_POLICY", "policy_path"))
    token_key: SecretStr | None = Field(None, validation_alias=_env("FLEXUS_TOKEN_KEY", "token_key"))
    encryption_key: SecretStr | None = Field(None, validation_alias=_env("FLEXUS_ENCRYPTION_KEY", "encryption_key"))
    mcp_state_key: SecretStr | None = Field(None, validation_alias=_env("FLEXUS_MCP_STATE_KEY", "mcp_state_key"))
    audit_key: SecretStr | None = Field(None, validation_alias=_env("FLEXUS_AUDIT_KEY", "audit_key"))
    # Earlier audit keys (comma list), kept so records written under them still verify.
    audit_previous_keys: SecretStr | None = Field(
        None, validation_alias=_env("FLEXUS_AUDIT_PREVIOUS_KEYS", "audit_previous_keys")
    )

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


def is_loopback(host: str) -> bool:
    """The one test of "only this machine can reach it" (endpoints over plain http, servers we bind)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
