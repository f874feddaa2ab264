"""The field rules of the ECS API, in one place.

Each ``problem_with_*`` function returns ``None`` for a good value or a short sentence that states
the rule that was broken. The client's request models, the tool input models and the sandbox's
validation all call these, so the rules cannot drift apart. Sources: the reference's sections 3
and 5 (SDK docstrings and the ECS/Flexus L documents).
"""

from __future__ import annotations

import base64
import binascii
import random
import re
import secrets
import string
from collections.abc import Callable
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, SecretStr

MAX_SERVERS_PER_REQUEST = 1000
MAX_IDS_PER_QUERY = 100
"""The Flexus L reference advises at most 100 ``server_id`` values per list query (a URI a gateway accepts)."""
MAX_PAGE_SIZE = 1000
MAX_USER_DATA_BYTES = 32 * 1024

Status = Literal[
    "ACTIVE",
    "BUILD",
    "DELETED",
    "ERROR",
    "HARD_REBOOT",
    "MIGRATING",
    "REBOOT",
    "REBUILD",
    "RESIZE",
    "REVERT_RESIZE",
    "SHELVED",
    "SHELVED_OFFLOADED",
    "SHUTOFF",
    "UNKNOWN",
    "VERIFY_RESIZE",
]
SERVER_STATUSES: tuple[str, ...] = get_args(Status)
"""Values the list filter accepts (the Flexus L reference's ListServersDetails)."""

STATUS_RANGES: dict[str, frozenset[str]] = {
    "ACTIVE": frozenset({"ACTIVE", "REBOOT", "HARD_REBOOT", "REBUILD", "MIGRATING", "RESIZE"}),
    "SHUTOFF": frozenset({"SHUTOFF", "RESIZE", "REBUILD"}),
    "ERROR": frozenset({"ERROR", "REBUILD"}),
    "VERIFY_RESIZE": frozenset({"VERIFY_RESIZE", "REVERT_RESIZE"}),
}
"""What filtering by a status finds: these four also cover their intermediate states; every other
status finds only itself."""


def statuses_matched_by(status: str) -> frozenset[str]:
    """The server statuses the list filter ``status`` finds."""
    return STATUS_RANGES.get(status, frozenset({status}))


PASSWORD_SPECIALS = "!@%-_=+[]:./?"  # noqa: S105 - the allowed characters, not a password
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
MAX_NAME_UNITS = 128
_CJK = re.compile(r"[\u4e00-\u9fff]")
_NAME = re.compile(r"^[\u4e00-\u9fffA-Za-z0-9_.\-]+$")
_HOSTNAME_CHARS = re.compile(r"^[A-Za-z0-9.\-]{1,64}$")
OsType = Literal["Linux", "Windows"]
PASSWORD_USER_NAMES: dict[str, str] = {"Linux": "root", "Windows": "Administrator"}
"""The account a password reset sets, by the image's OS (``metadata.os_type``)."""
GENERATED_PASSWORD_ALPHABET = string.ascii_letters + string.digits + "!@%-_=+.?"


def problem_with_server_id(value: str) -> str | None:
    if not _UUID.match(value):
        return "must be a server UUID like 1b4f6f66-0c5b-4d6e-9b8b-6c2b8f1f0a11"
    return None


def problem_with_server_ids(values: list[str], *, limit: int | None = MAX_SERVERS_PER_REQUEST) -> str | None:
    if not values:
        return "must name at least one server"
    if limit is not None and len(values) > limit:
        return f"at most {limit} servers per request, got {len(values)}"
    seen: set[str] = set()
    for index, value in enumerate(values):
        problem = problem_with_server_id(value)
        if problem:
            return f"item {index}: {problem}"
        if value in seen:
            return f"item {index}: duplicate server id {value}"
        seen.add(value)
    return None


def name_length(value: str) -> int:
    """A name's length as the Flexus L reference counts it: "1-128 English characters or 1-64 Chinese
    characters", so a CJK character (U+4E00-U+9FFF) counts as two and every other allowed one as one."""
    return len(value) + len(_CJK.findall(value))


def problem_with_name(value: str) -> str | None:
    if not _NAME.match(value):
        return "must be letters, digits, Chinese characters, '_', '-' or '.', at least one"
    if (length := name_length(value)) > MAX_NAME_UNITS:
        return (
            f"must be at most 128 characters, a Chinese character counting as two (so at most 64 Chinese "
            f"characters); this one counts {length}"
        )
    return None


def problem_with_description(value: str) -> str | None:
    if len(value) > 85:
        return f"must be at most 85 characters, got {len(value)}"
    if "<" in value or ">" in value:
        return "must not contain '<' or '>'"
    return None


def problem_with_hostname(value: str) -> str | None:
    if not _HOSTNAME_CHARS.match(value):
        return "must be 1-64 characters of letters, digits, '.' and '-'"
    if value[0] in ".-" or value[-1] in ".-":
        return "must not start or end with '.' or '-'"
    for pair in ("..", "--", ".-", "-."):
        if pair in value:
            return f"must not contain '{pair}'"
    return None


def problem_with_user_data(value: str) -> str | None:
    # Bound the work before decoding: base64 is 4/3 of the decoded size.
    if len(value) > (MAX_USER_DATA_BYTES * 4) // 3 + 4:
        return f"must decode to at most {MAX_USER_DATA_BYTES} bytes (32 KB)"
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return "must be base64-encoded"
    if len(decoded) > MAX_USER_DATA_BYTES:
        return f"must decode to at most {MAX_USER_DATA_BYTES} bytes (32 KB), got {len(decoded)}"
    return None


def problem_with_password_format(value: str) -> str | None:
    """The rules every image shares: length, characters, classes. Never quotes the password back."""
    if not 8 <= len(value) <= 26:
        return "must be 8-26 characters long"
    classes = 0
    for test in (str.isupper, str.islower, str.isdigit):
        if any(test(ch) and ch.isascii() for ch in value):
            classes += 1
    if any(ch in PASSWORD_SPECIALS for ch in value):
        classes += 1
    if any(not (ch.isascii() and (ch.isalnum() or ch in PASSWORD_SPECIALS)) for ch in value):
        return f"may contain only letters, digits and the specials {PASSWORD_SPECIALS}"
    if classes < 3:
        return "must contain at least three of: uppercase letters, lowercase letters, digits, specials"
    return None


def problem_with_password_for_user(value: str, os_type: str) -> str | None:
    """The user-name rules of one OS, in any letter case (the Flexus L reference): no Linux password may
    contain ``root`` or ``toor``; no Windows password may contain ``Administrator``, its reverse, or more
    than two consecutive characters of it (``adm``, ``str``, ...)."""
    user = PASSWORD_USER_NAMES[os_type].lower()
    lowered = value.lower()
    if user in lowered or user[::-1] in lowered:
        return f"must not contain the {os_type} user name '{PASSWORD_USER_NAMES[os_type]}', forwards or reversed"
    if os_type == "Windows":
        for start in range(len(user) - 2):
            if user[start : start + 3] in lowered:
                return "must not contain more than two consecutive characters of the Windows user name 'Administrator'"
    return None


def password_os_types(os_type: str | None) -> tuple[str, ...]:
    """The OS whose rules apply: the one named, or both when it is unknown (the stricter answer)."""
    return (os_type,) if os_type in PASSWORD_USER_NAMES else tuple(PASSWORD_USER_NAMES)


def problem_with_password(value: str, os_type: str | None = None) -> str | None:
    """Every rule for a server whose image runs ``os_type`` (``metadata.os_type``: Linux or Windows); with
    no (or an unknown) OS, the rules of both, so the answer is right whatever the image."""
    if problem := problem_with_password_format(value):
        return problem
    for os_name in password_os_types(os_type):
        if problem := problem_with_password_for_user(value, os_name):
            return problem
    return None


def generate_password(length: int = 20, rng: random.Random | None = None) -> str:
    """A password every image accepts (the rules of both OSes, with uppercase, lowercase and digits).
    ``rng`` is for tests; by default the OS's CSPRNG."""
    chooser = rng or secrets.SystemRandom()
    while True:
        candidate = "".join(chooser.choice(GENERATED_PASSWORD_ALPHABET) for _ in range(length))
        has_all = all(any(test(ch) for ch in candidate) for test in (str.isupper, str.islower, str.isdigit))
        if has_all and problem_with_password(candidate) is None:
            return candidate


def problem_with_limit(value: int) -> str | None:
    if not 1 <= value <= MAX_PAGE_SIZE:
        return f"must be between 1 and {MAX_PAGE_SIZE}"
    return None


def problem_with_status(value: str) -> str | None:
    if value not in SERVER_STATUSES:
        return "must be one of " + ", ".join(SERVER_STATUSES)
    return None


def checked(problem_with: Callable[[Any], str | None]) -> AfterValidator:
    """A pydantic validator from a rule above: the model's error then names the field and the rule."""

    def validate(value: Any) -> Any:
        plain = value.get_secret_value() if isinstance(value, SecretStr) else value
        if plain is not None and (problem := problem_with(plain)):
            raise ValueError(problem)
        return value

    return AfterValidator(validate)


ServerId = Annotated[str, checked(problem_with_server_id)]
ServerName = Annotated[str, checked(problem_with_name)]
Description = Annotated[str, checked(problem_with_description)]
Hostname = Annotated[str, checked(problem_with_hostname)]
UserData = Annotated[str, checked(problem_with_user_data)]
SealedUserData = Annotated[SecretStr, checked(problem_with_user_data)]
"""User data as a tool takes it: kept secret until the request that sends it (a boot script carries secrets)."""
PageSize = Annotated[int, checked(problem_with_limit)]
