"""The Slack surface's settings, from two places that never mix:

- ``SlackBotSettings``: the app's credentials (bot token, app-level token, signing secret) and the Web
  API URL, from the environment only, never from the policy file or the command line;
- ``SlackSettings``: where the bot may act (workspaces, channels, the approvals channel), the policy
  file's ``[slack]`` table. The gate keeps that table opaque so a policy with one loads where Slack is not
  installed; this model validates it, on the policy the registry holds now (the file may be edited while
  the bot runs).
"""

from __future__ import annotations

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError

from flexus_ops.config import EnvSettings, checked_endpoint
from flexus_ops.core.errors import ConfigurationError
from flexus_ops.gate.policy import Policy

from ..chat.verbs import COMMAND as COMMAND  # the slash command the manifests declare

DEFAULT_API_URL = "https://slack.com/api/"


class SlackSettings(BaseModel):
    """Where the Slack bot may act, by immutable ids (names can be changed by anyone)."""

    model_config = ConfigDict(extra="forbid")

    team_ids: list[str] = Field(default_factory=list, description="workspaces; empty = any")
    channel_ids: list[str] = Field(default_factory=list, description="channels commands may come from; empty = any")
    approvals_channel: str | None = Field(None, description="channel id where approval requests are posted")
    approver_usergroups: list[str] = Field(default_factory=list, description="user groups notified of requests")


def slack_settings(policy: Policy) -> SlackSettings:
    """The policy's ``[slack]`` table, validated; a bad one is a ConfigurationError naming the file, as a
    bad policy is, so the bot refuses to start on it and refuses requests after an edit breaks it."""
    try:
        return SlackSettings.model_validate(policy.slack)
    except ValidationError as exc:
        raise ConfigurationError(f"policy file {policy.source}: [slack]: {exc}") from None


class SlackBotSettings(EnvSettings):
    """The Slack app's credentials, from the environment (never from the policy file or the command line);
    each may be a file instead (``SLACK_BOT_TOKEN_FILE`` ...)."""

    bot_token: SecretStr | None = Field(None, validation_alias=AliasChoices("SLACK_BOT_TOKEN", "bot_token"))
    signing_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("SLACK_SIGNING_SECRET", "signing_secret")
    )
    app_token: SecretStr | None = Field(None, validation_alias=AliasChoices("SLACK_APP_TOKEN", "app_token"))
    api_url: str = Field(DEFAULT_API_URL, validation_alias=AliasChoices("SLACK_API_URL", "api_url"))

    def check(self, mode: str) -> None:
        """Refuse to start without what ``mode`` needs ("socket" or "http"), naming the variable."""
        if self.bot_token is None:
            raise ConfigurationError("SLACK_BOT_TOKEN is not set (the app's Bot User OAuth Token, xoxb-...)")
        if mode == "socket" and self.app_token is None:
            raise ConfigurationError("SLACK_APP_TOKEN is not set (an app-level token, xapp-..., connections:write)")
        if mode == "http" and self.signing_secret is None:
            raise ConfigurationError("SLACK_SIGNING_SECRET is not set; HTTP mode cannot verify requests without it")
        self.web_api_base()

    def web_api_base(self) -> str:
        """The Web API base URL with its trailing slash (slack_sdk joins method names onto it)."""
        return checked_endpoint(self.api_url, "SLACK_API_URL") + "/"
