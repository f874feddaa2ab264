"""``/flexus`` command text to a typed request: a pure parser (no Slack, no registry, no I/O).

Each request knows the registry tool it maps to and that tool's arguments; the listener in
``bots/app.py`` only routes them. The parser refuses anything that looks like a password: a slash
command's text is kept by Slack and passes through its logs, so a password must never travel there.
Refusals never quote the suspicious text back.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from flexus_ops.cloud import rules

COMMAND = "/flexus"
MAX_TEXT_CHARS = 4000  # Slack caps command text too; this bounds the work on anything else
SCREEN_ROWS = 20  # one screenful of a listing; the rest is counted, not shown
LIST_FILTERS = {"status": "status", "name": "name", "tag": "tag", "ip": "ip", "not-tag": "not_tag", "flavor": "flavor"}

# Characters a password may hold but a server name cannot (names allow only letters, digits, CJK, _ - .).
_PASSWORD_ONLY = frozenset(rules.PASSWORD_SPECIALS) - frozenset("_-.")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_SECRET_KEY = re.compile(r"^-{0,2}(new[-_]?)?(password|passwd|pass|pwd|pw|secret|credentials?)$", re.IGNORECASE)
_SAFE_VERB = re.compile(r"^[a-z-]{1,20}$")  # lowercase and '-' only: at most two character classes, never a password

NO_SECRETS_IN_TEXT = (
    "Passwords are never taken from command text: Slack keeps the text of every command and it passes "
    "through logs. Run `/flexus reset-password <server...>` alone; it opens a private window where you "
    "enter the new password or have one generated."
)

HELP = """\
*`/flexus` runs Flexus L operations through the same gate as every other surface.*
Reads (only you see the answer; add `--share` to post it in the channel):
• `/flexus list [status=ACTIVE] [name=web] [tag=env=prod] [ip=10.0] [page=2]`
• `/flexus show <server>` · `/flexus job <job-id>` · `/flexus approvals`
Changes (a preview first; nothing happens until you press Confirm):
• `/flexus start <server...>` · `/flexus stop [--hard] <server...>` · `/flexus reboot [--hard] <server...>`
• `/flexus rename <server> <new-name>` · `/flexus describe <server> <text>`
• `/flexus reset-password <server...>`: opens a private window; an approver must approve it
Servers are names or ids, several at once: `/flexus stop web-01 web-02`."""


# -- requests -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Help:
    """Show the help, after ``problem`` when the text could not be understood."""

    problem: str | None = None


@dataclass(frozen=True)
class Problem:
    """The text was understood well enough to say what is wrong with it."""

    message: str


@dataclass(frozen=True)
class ReadRequest:
    """A read tool call; ``share`` posts the answer in the channel instead of to the requester only."""

    tool: str
    arguments: dict[str, Any]
    share: bool = False


@dataclass(frozen=True)
class ChangeRequest:
    """A gated tool call: the bot previews it and confirms it only on the requester's click."""

    tool: str
    arguments: dict[str, Any]
    verb: str


@dataclass(frozen=True)
class ResetPasswordRequest:
    servers: tuple[str, ...]
    tool: str = "flexus_reset_servers_password"


@dataclass(frozen=True)
class ApprovalsRequest:
    """The approval requests the person may see (all of them, for an approver)."""


Request = Help | Problem | ReadRequest | ChangeRequest | ResetPasswordRequest | ApprovalsRequest


# -- helpers ------------------------------------------------------------------------------------


@dataclass
class _Words:
    """Tokens after the verb, split into flags and positional words."""

    flags: set[str] = field(default_factory=set)
    words: list[str] = field(default_factory=list)


def _normalise(text: str) -> str:
    # Slack escapes &, < and > in command text; phones turn quotes curly and "--" into a dash.
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    text = text.translate(str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2018": "'", "\u2019": "'"}))
    return re.sub(r"(^|\s)[\u2014\u2013](?=\w)", r"\1--", text)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _has_secret_key(token: str) -> bool:
    """``password=...``, ``--pw ...``, ``new_password:...``: a secret offered in the text."""
    key = re.split(r"[=:]", token, maxsplit=1)[0]
    return bool(_SECRET_KEY.match(key)) and (key.startswith("-") or key != token)


def looks_like_password(token: str) -> bool:
    """True for a word that cannot be a server reference, or that reads like a password rather than
    a name (valid by the password rules, with upper and lower case letters and digits)."""
    if _UUID.match(token):
        return False
    if any(ch in _PASSWORD_ONLY for ch in token) or rules.problem_with_name(token) is not None:
        return True
    mixed = any(c.isupper() for c in token) and any(c.islower() for c in token) and any(c.isdigit() for c in token)
    return mixed and rules.problem_with_password(token) is None


def _split(verb: str, tokens: list[str], allowed_flags: set[str]) -> _Words | Problem:
    result = _Words()
    for token in tokens:
        if token.startswith("--") or (token.startswith("-") and len(token) > 1 and not token[1].isdigit()):
            name = "--" + token.lstrip("-").lower()
            if name not in allowed_flags:
                shown = name if _SAFE_VERB.match(name.lstrip("-")) else "this option"
                options = ", ".join(sorted(allowed_flags)) or "none"
                return Problem(f"`{verb}` does not take {shown} (options: {options}).")
            result.flags.add(name)
        else:
            result.words.append(token)
    return result


def _servers(verb: str, words: list[str]) -> tuple[str, ...] | Problem:
    if not words:
        return Problem(f"`{verb}` needs at least one server (a name or an id): `/flexus {verb} web-01`.")
    seen: set[str] = set()
    for word in words:
        if word in seen:
            return Problem(f"`{word}` is listed twice.")
        seen.add(word)
    return tuple(words)


# -- verbs --------------------------------------------------------------------------------------


def _parse_list(words: list[str], share: bool) -> Request:
    arguments: dict[str, Any] = {"limit": SCREEN_ROWS}
    for word in words:
        key, sep, value = word.partition("=")
        key = key.lower()
        if not sep:
            key, value = "name", word  # a bare word filters by name, the most common wish
        if key == "page":
            if not value.isdigit() or not 1 <= int(value) <= 100_000:
                return Problem("`page` must be a whole number from 1.")
            arguments["page"] = int(value)
            continue
        if key not in LIST_FILTERS:
            shown = f"`{key}`" if _SAFE_VERB.match(key) else "that filter"
            return Problem(f"`list` has no filter {shown}; filters: {', '.join([*LIST_FILTERS, 'page'])}.")
        if not value:
            return Problem(f"`{key}=` needs a value.")
        target = LIST_FILTERS[key]
        if target in arguments:
            return Problem(f"`{key}` is given twice.")
        arguments[target] = value.upper() if target == "status" else value
    return ReadRequest("flexus_list_servers", arguments, share)


def _one(verb: str, words: list[str], what: str) -> str | Problem:
    if len(words) != 1:
        return Problem(f"`{verb}` takes exactly one {what}: `/flexus {verb} <{what}>`.")
    return words[0]


def _parse_reset(words: list[str]) -> Request:
    for index, word in enumerate(words, start=1):
        if looks_like_password(word):
            return Problem(
                f"The {_ordinal(index)} word after `reset-password` looks like a password, not a server. "
                + NO_SECRETS_IN_TEXT
                + " If it really is a server's name, use the server's id instead."
            )
    servers = _servers("reset-password", words)
    if isinstance(servers, Problem):
        return servers
    return ResetPasswordRequest(servers)


def parse(text: str) -> Request:
    """The request ``text`` (what follows ``/flexus``) asks for; never raises."""
    if len(text) > MAX_TEXT_CHARS:
        return Problem(f"That command is too long (over {MAX_TEXT_CHARS} characters).")
    try:
        tokens = shlex.split(_normalise(text))
    except ValueError:
        return Problem('The command has an unbalanced quote; quote text like `"a description"`.')
    if not tokens:
        return Help()
    verb, rest = tokens[0].lower(), tokens[1:]
    # Checked before anything else, for every verb: a secret offered in the text is refused outright.
    if any(_has_secret_key(token) for token in rest) or _has_secret_key(tokens[0]):
        return Problem(NO_SECRETS_IN_TEXT)

    if verb in ("help", "-h", "--help", "?"):
        return Help()
    if verb in ("list", "ls"):
        split = _split(verb, rest, {"--share"})
        return split if isinstance(split, Problem) else _parse_list(split.words, "--share" in split.flags)
    if verb == "show":
        split = _split(verb, rest, {"--share"})
        if isinstance(split, Problem):
            return split
        server = _one(verb, split.words, "server")
        if isinstance(server, Problem):
            return server
        return ReadRequest("flexus_show_server", {"server": server}, "--share" in split.flags)
    if verb == "job":
        split = _split(verb, rest, {"--share"})
        if isinstance(split, Problem):
            return split
        job = _one(verb, split.words, "job-id")
        if isinstance(job, Problem):
            return job
        return ReadRequest("flexus_show_job", {"job_id": job}, "--share" in split.flags)
    if verb == "approvals":
        split = _split(verb, rest, set())
        if isinstance(split, Problem):
            return split
        if split.words:
            return Problem("`approvals` takes no arguments.")
        return ApprovalsRequest()
    if verb in ("start", "stop", "reboot"):
        allowed = set() if verb == "start" else {"--hard"}
        split = _split(verb, rest, allowed)
        if isinstance(split, Problem):
            return split
        servers = _servers(verb, split.words)
        if isinstance(servers, Problem):
            return servers
        arguments: dict[str, Any] = {"servers": list(servers)}
        if verb != "start":
            arguments["type"] = "HARD" if "--hard" in split.flags else "SOFT"
        return ChangeRequest(f"flexus_{verb}_servers", arguments, verb)
    if verb == "rename":
        split = _split(verb, rest, set())
        if isinstance(split, Problem):
            return split
        if len(split.words) != 2:
            return Problem("`rename` takes a server and its new name: `/flexus rename web-01 web-legacy-01`.")
        server, name = split.words
        return ChangeRequest("flexus_update_server", {"server": server, "name": name}, verb)
    if verb == "describe":
        # Descriptions are free text: only the first word is the server, the rest is kept as typed.
        if len(rest) < 2:
            return Problem('`describe` takes a server and the text: `/flexus describe web-01 "main shop node"`.')
        return ChangeRequest("flexus_update_server", {"server": rest[0], "description": " ".join(rest[1:])}, verb)
    if verb in ("reset-password", "reset_password", "resetpassword", "reset-pw"):
        split = _split(verb, rest, set())
        return split if isinstance(split, Problem) else _parse_reset(split.words)
    shown = f"`{verb}`" if _SAFE_VERB.match(verb) else "that command"
    return Help(problem=f"I don't know {shown}.")
