"""SDK-HMAC-SHA256 request signing, byte-exact with ``huaweicloudsdkcore`` 3.1.219.

The same canonicalisation serves both sides: the client signs with :func:`sign`, the sandbox
verifies with :func:`canonical_request` over what it received. The known-answer vectors in
``tests/data/sign_vectors.json`` pin every detail (trailing slash, query order, unsigned
underscore headers, UNSIGNED-PAYLOAD).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

ALGORITHM = "SDK-HMAC-SHA256"
DERIVED_ALGORITHM = "V11-HMAC-SHA256"
DATE_HEADER = "X-Sdk-Date"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
CONTENT_SHA256_HEADER = "X-Sdk-Content-Sha256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _quote(text: str) -> str:
    # RFC 3986 unreserved characters stay, everything else is %XX with uppercase hex.
    return quote(text, safe="~")


def canonical_uri(path: str) -> str:
    """Percent-decode, re-encode each segment, and always end with ``/`` (the URL sent does not)."""
    segments = unquote(path).split("/")
    uri = "/".join(_quote(segment) for segment in segments)
    return uri if uri.endswith("/") else uri + "/"


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def canonical_query(pairs: Iterable[tuple[str, Any]]) -> str:
    """The canonical query string; the client also sends exactly this as the URL query."""
    expanded: list[tuple[str, str]] = []
    for key, value in pairs:
        if isinstance(value, list | tuple):
            expanded.extend((key, _query_value(item)) for item in sorted(value))
        else:
            expanded.append((key, _query_value(value)))
    expanded.sort()
    return "&".join(f"{_quote(key)}={_quote(value)}" for key, value in expanded)


def signed_header_names(header_names: Iterable[str]) -> list[str]:
    """Every header is signed except those with ``_`` in the name (gateways drop them)."""
    return sorted({name.lower() for name in header_names if "_" not in name})


def payload_hash(body: bytes | None, headers: Mapping[str, str]) -> str:
    if not body:
        return EMPTY_SHA256
    declared = headers.get(CONTENT_SHA256_HEADER.lower())
    if declared is not None:
        return declared
    return hashlib.sha256(body).hexdigest()


def canonical_request(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: list[str],
    body: bytes | None,
) -> str:
    """``headers`` must be keyed by lowercase name; ``query`` is already canonical."""
    header_block = "".join(f"{name}:{headers.get(name, '').strip()}\n" for name in signed_headers)
    return "\n".join(
        [
            method.upper(),
            canonical_uri(path),
            query,
            header_block,
            ";".join(signed_headers),
            payload_hash(body, headers),
        ]
    )


def string_to_sign(date: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{date}\n{digest}"


def signature(secret_key: str, to_sign: str) -> str:
    return hmac.new(secret_key.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def derived_info(date: str, region: str, service: str) -> str:
    return f"{date[:8]}/{region}/{service}"


def derived_signing_key(access_key: str, secret_key: str, info: str) -> str:
    """HKDF-SHA256 (salt = AK, IKM = SK, 32 bytes); the SDK keys its HMAC with the hex string."""
    prk = hmac.new(access_key.encode(), secret_key.encode(), hashlib.sha256).digest()
    okm = hmac.new(prk, info.encode() + b"\x01", hashlib.sha256).digest()
    return okm.hex()


def format_date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(DATE_FORMAT)


def parse_date(text: str) -> datetime:
    return datetime.strptime(text, DATE_FORMAT).replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class SignedRequest:
    headers: dict[str, str]
    """All headers to send (input headers plus Host, X-Sdk-Date, Authorization, ...)."""
    query: str
    """The canonical query, also the query to put on the URL."""
    canonical_request: str
    string_to_sign: str
    authorization: str


def sign(
    *,
    access_key: str,
    secret_key: str,
    method: str,
    host: str,
    path: str,
    query: Iterable[tuple[str, Any]] = (),
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    now: datetime | None = None,
    derived_for: tuple[str, str] | None = None,
) -> SignedRequest:
    """Sign one request the way the official signer does, returning every header to send.

    ``derived_for=(region, service)`` selects the derived-AK/SK variant (V11-HMAC-SHA256), which
    the SDK uses only for hosts outside the public endpoint pattern; ECS normally does not.
    """
    out: dict[str, str] = dict(headers or {})
    lowered = {name.lower(): name for name in out}
    if DATE_HEADER.lower() not in lowered:
        out[DATE_HEADER] = format_date(now or datetime.now(UTC))
    if "host" not in lowered:
        out["Host"] = host
    content_type = out.get(lowered.get("content-type", "content-type"))
    if content_type and not content_type.startswith(("application/json", "application/bson")):
        out.setdefault(CONTENT_SHA256_HEADER, UNSIGNED_PAYLOAD)

    by_lower = {name.lower(): value for name, value in out.items()}
    names = signed_header_names(out)
    canonical_q = canonical_query(query)
    canonical = canonical_request(method, path, canonical_q, by_lower, names, body)
    date = by_lower[DATE_HEADER.lower()]
    if derived_for is None:
        to_sign = string_to_sign(date, canonical)
        authorization = (
            f"{ALGORITHM} Access={access_key}, SignedHeaders={';'.join(names)}, "
            f"Signature={signature(secret_key, to_sign)}"
        )
    else:
        info = derived_info(date, *derived_for)
        digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        to_sign = f"{DERIVED_ALGORITHM}\n{date}\n{info}\n{digest}"
        key = derived_signing_key(access_key, secret_key, info)
        authorization = (
            f"{DERIVED_ALGORITHM} Credential={access_key}/{info}, SignedHeaders={';'.join(names)}, "
            f"Signature={signature(key, to_sign)}"
        )
    out["Authorization"] = authorization
    return SignedRequest(out, canonical_q, canonical, to_sign, authorization)


@dataclass(frozen=True, slots=True)
class ParsedAuthorization:
    access_key: str
    signed_headers: list[str]
    signature: str
    algorithm: str = ALGORITHM
    info: str | None = None
    """The derived-signing scope ``yyyymmdd/region/service`` (V11 only)."""


def parse_authorization(value: str) -> ParsedAuthorization | None:
    """Parse ``SDK-HMAC-SHA256 Access=..., SignedHeaders=..., Signature=...`` or its derived form
    ``V11-HMAC-SHA256 Credential=AK/yyyymmdd/region/service, ...``; None if malformed. The one parser:
    the sandbox's gateway verifies with it too."""
    algorithm, _, rest = value.partition(" ")
    if algorithm not in (ALGORITHM, DERIVED_ALGORITHM):
        return None
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, item = part.strip().partition("=")
        if not sep:
            return None
        fields[key] = item
    if "SignedHeaders" not in fields or "Signature" not in fields:
        return None
    headers = [h for h in fields["SignedHeaders"].split(";") if h]
    if algorithm == ALGORITHM:
        if "Access" not in fields:
            return None
        return ParsedAuthorization(fields["Access"], headers, fields["Signature"])
    access_key, sep, info = fields.get("Credential", "").partition("/")
    if not sep:
        return None
    return ParsedAuthorization(access_key, headers, fields["Signature"], DERIVED_ALGORITHM, info)
