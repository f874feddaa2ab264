"""The gate's keys: confirmation-token HMAC, AES-GCM for passwords at rest, MCP request-state sealing,
and the audit chain's HMAC key (with earlier audit keys, which only verify).

Each comes from configuration (so replicas agree) or, on a single machine, is derived from a random
key file created once in the state directory with mode 0600.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from ..core.errors import ConfigurationError
from .private import private_dir, trusted

if TYPE_CHECKING:  # the audit module loads with the keys, on first use, not when a surface starts
    from .audit import AuditKeyRing

TOKEN_PREFIX = "fxc1"  # noqa: S105 - a version tag, not a secret
STATE_DIR_KEY = "state-dir"  # in FLEXUS_AUDIT_PREVIOUS_KEYS: the audit key derived from the master key file


def _derive(master: bytes, label: str) -> bytes:
    """HKDF-SHA256 (RFC 5869) for one 32-byte block: extract with a fixed salt, expand with the label.
    Written out (two HMACs) so that starting a surface does not import a crypto library."""
    prk = hmac.new(b"flexus-ops", master, hashlib.sha256).digest()
    return hmac.new(prk, label.encode() + b"\x01", hashlib.sha256).digest()


def _load_master(state_dir: Path) -> bytes:
    path = state_dir / "keys" / "master.key"
    private_dir(state_dir)
    private_dir(path.parent)
    if path.exists():
        trusted(path, "key file", secret=True)  # a key someone else could read or plant is no secret
        return base64.b64decode(path.read_bytes())
    key = secrets.token_bytes(32)
    # O_EXCL: if another process created it first, use theirs.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return base64.b64decode(path.read_bytes())
    with os.fdopen(fd, "wb") as handle:
        handle.write(base64.b64encode(key))
    return key


def _configured(value: SecretStr | None, name: str) -> bytes | None:
    if value is None:
        return None
    raw = value.get_secret_value()
    try:
        decoded = base64.b64decode(raw, validate=True)
    except ValueError:
        decoded = b""
    if len(decoded) >= 32:
        return decoded[:32]
    if len(raw) >= 32:
        return hashlib.sha256(raw.encode()).digest()
    raise ConfigurationError(f"{name}: must be at least 32 characters (or base64 of 32 random bytes)")


@dataclass(frozen=True)
class Keys:
    token: bytes
    encryption: bytes
    mcp_state: bytes
    audit: AuditKeyRing

    @classmethod
    def load(
        cls,
        state_dir: Path,
        *,
        token_key: SecretStr | None = None,
        encryption_key: SecretStr | None = None,
        mcp_state_key: SecretStr | None = None,
        audit_key: SecretStr | None = None,
        audit_previous_keys: SecretStr | None = None,
    ) -> Keys:
        """``audit_previous_keys``: a comma list of earlier audit keys, which verify old records only;
        ``state-dir`` in it names the key derived from this state dir's master key file (the default
        audit key before ``audit_key`` was configured)."""
        token = _configured(token_key, "FLEXUS_TOKEN_KEY")
        encryption = _configured(encryption_key, "FLEXUS_ENCRYPTION_KEY")
        mcp_state = _configured(mcp_state_key, "FLEXUS_MCP_STATE_KEY")
        from .audit import KEY_LABEL as AUDIT_KEY_LABEL
        from .audit import AuditKeyRing

        audit = _configured(audit_key, "FLEXUS_AUDIT_KEY")
        if token is None or encryption is None or mcp_state is None or audit is None:
            master = _load_master(state_dir)
            token = token or _derive(master, "confirmation-token")
            encryption = encryption or _derive(master, "secret-at-rest")
            mcp_state = mcp_state or _derive(master, "mcp-request-state")
            audit = audit or _derive(master, AUDIT_KEY_LABEL)
        previous: list[bytes] = []
        listed = audit_previous_keys.get_secret_value() if audit_previous_keys is not None else ""
        for item in (part.strip() for part in listed.split(",")):
            if item == STATE_DIR_KEY:
                previous.append(_derive(_load_master(state_dir), AUDIT_KEY_LABEL))
            elif item:
                key = _configured(SecretStr(item), "FLEXUS_AUDIT_PREVIOUS_KEYS")
                assert key is not None
                previous.append(key)
        return cls(token, encryption, mcp_state, AuditKeyRing.of(audit, previous))

    def __repr__(self) -> str:
        return "Keys(<hidden>)"

    # -- confirmation tokens ----------------------------------------------------------------

    def _mac(self, action_id: str, person: str, tool: str, args_hash: str) -> str:
        message = "\n".join([action_id, person, tool, args_hash]).encode()
        return base64.urlsafe_b64encode(hmac.new(self.token, message, hashlib.sha256).digest()[:24]).decode()

    def issue_token(self, action_id: str, person: str, tool: str, args_hash: str) -> str:
        return f"{TOKEN_PREFIX}.{action_id}.{self._mac(action_id, person, tool, args_hash)}"

    @staticmethod
    def action_id_of(token: str) -> str | None:
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1].isalnum() or len(parts[1]) != 32:
            return None
        return parts[1]

    def token_matches(self, token: str, action_id: str, person: str, tool: str, args_hash: str) -> bool:
        expected = self.issue_token(action_id, person, tool, args_hash)
        return hmac.compare_digest(token.encode(), expected.encode())

    def bind(self, secret: str) -> str:
        """A keyed fingerprint of a secret argument: binds it to the confirmation without storing it."""
        return hmac.new(self.token, b"arg\n" + secret.encode(), hashlib.sha256).hexdigest()

    # -- secrets at rest --------------------------------------------------------------------

    def encrypt(self, plaintext: str, context: str) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = secrets.token_bytes(12)
        return nonce + AESGCM(self.encryption).encrypt(nonce, plaintext.encode(), context.encode())

    def decrypt(self, blob: bytes, context: str) -> str:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return AESGCM(self.encryption).decrypt(blob[:12], blob[12:], context.encode()).decode()
