"""Configuration: the official SDK's variable names, endpoint resolution, and refusals that protect secrets."""

from __future__ import annotations

import pytest

from flexus_ops.config import AuthMode, Settings
from flexus_ops.core.errors import ConfigurationError


def test_no_credentials_means_the_embedded_sandbox() -> None:
    settings = Settings()
    assert settings.auth_mode is AuthMode.SANDBOX
    assert settings.ecs_base_url() is None
    assert "SANDBOX" in settings.describe_target()


def test_sdk_variable_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUAWEICLOUD_SDK_AK", "AKFROMENV")
    monkeypatch.setenv("HUAWEICLOUD_SDK_SK", "SKFROMENV")
    monkeypatch.setenv("HUAWEICLOUD_SDK_PROJECT_ID", "p1")
    monkeypatch.setenv("FLEXUS_REGION", "ap-southeast-1")
    settings = Settings()
    assert settings.auth_mode is AuthMode.AKSK
    assert settings.project_id == "p1"
    assert settings.ecs_base_url() == "https://ecs.ap-southeast-1.myhuaweicloud.com"
    assert "SKFROMENV" not in repr(settings)
    assert "SKFROMENV" not in settings.describe_target()


def test_region_endpoint_override_of_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUAWEICLOUD_SDK_REGION_ECS_CN_NORTH_4", "https://ecs.private.example.com, https://b")
    settings = Settings(access_key="a", secret_key="b")
    assert settings.ecs_base_url() == "https://ecs.private.example.com"


def test_flexus_endpoint_wins_and_serves_iam_too() -> None:
    settings = Settings(access_key="a", secret_key="b", ecs_endpoint="http://127.0.0.1:9090/")
    assert settings.ecs_base_url() == "http://127.0.0.1:9090"
    assert settings.iam_base_url() == "http://127.0.0.1:9090"


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"ecs_endpoint": "http://127.0.0.1:9090"}, "no credentials"),
        ({"access_key": "a"}, "both"),
        ({"access_key": "a", "secret_key": "b", "ecs_endpoint": "http://ecs.example.com"}, "loopback"),
        ({"access_key": "a", "secret_key": "b", "ecs_endpoint": "ftp://127.0.0.1"}, "http(s)"),
        ({"access_key": "a", "secret_key": "b", "ecs_endpoint": "https://h/?x=1"}, "no query"),
    ],
)
def test_unworkable_settings_are_refused_clearly(values: dict, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words.replace("(", r"\(").replace(")", r"\)")):
        Settings(**values).ecs_base_url()


def test_iam_password_auth_mode() -> None:
    settings = Settings(iam_domain="d", iam_user="u", iam_password="p", ecs_endpoint="http://localhost:1")
    assert settings.auth_mode is AuthMode.TOKEN
    assert "token" in settings.describe_target()
