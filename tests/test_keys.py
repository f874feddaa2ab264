"""The gate's keys: derivation pinned to the library HKDF, tokens bound to what they confirm."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

from flexus_ops.gate.secrets import Keys, _derive


def test_key_derivation_is_rfc5869_hkdf() -> None:
    master = bytes(range(32))
    for label in ("confirmation-token", "secret-at-rest", "mcp-request-state"):
        expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"flexus-ops", info=label.encode()).derive(master)
        assert _derive(master, label) == expected


def test_local_keys_are_stable_private_and_distinct(tmp_path: Path) -> None:
    first, again = Keys.load(tmp_path), Keys.load(tmp_path)
    assert first == again
    assert len({first.token, first.encryption, first.mcp_state}) == 3
    assert (tmp_path / "keys" / "master.key").stat().st_mode & 0o077 == 0
    assert "token" not in repr(first).lower() or "hidden" in repr(first)


def test_configured_keys_win_and_tokens_bind_everything(tmp_path: Path) -> None:
    keys = Keys.load(tmp_path, token_key=SecretStr("x" * 40))
    token = keys.issue_token("a" * 32, "alice", "flexus_stop_servers", "hash")
    assert keys.action_id_of(token) == "a" * 32
    assert keys.token_matches(token, "a" * 32, "alice", "flexus_stop_servers", "hash")
    for changed in (
        ("b" * 32, "alice", "flexus_stop_servers", "hash"),
        ("a" * 32, "bob", "flexus_stop_servers", "hash"),
        ("a" * 32, "alice", "flexus_start_servers", "hash"),
        ("a" * 32, "alice", "flexus_stop_servers", "h2"),
    ):
        assert not keys.token_matches(token, *changed)
    other = Keys.load(tmp_path / "elsewhere", token_key=SecretStr("y" * 40))
    assert not other.token_matches(token, "a" * 32, "alice", "flexus_stop_servers", "hash")
    blob = keys.encrypt("Secret-Pass-1", context="action-1")
    assert b"Secret-Pass-1" not in blob and keys.decrypt(blob, context="action-1") == "Secret-Pass-1"
