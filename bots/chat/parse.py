"""A chat command's text to a typed request: a pure parser (no chat SDK, no registry calls, no I/O).

The verb table (``verbs.VERBS``) says which tool each verb calls and which words fill which argument;
the tool's spec says whether it is a read, a change, or takes a secret. Surfaces only route the request
this returns. The parser refuses anything that looks like a password: chat services keep the text of
every command and it passes through their logs, so a password must never travel there. Refusals never
quote the suspicious text back.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flexus_ops.cloud import rules
from flexus_ops.core.tools import ToolSpec

from .verbs import APPROVALS_VERB, COMMAND, HELP_VERB, LIST_FILTERS, SHARE, VERBS, Filters, Verb, by_word, catalog

MAX_TEXT_CHARS = 4000  # Slack caps command text too; this bounds the work on anything else

# Characters a password may hold but a server name cannot (names allow only letters, digits, CJK, _ - .).
_PASSWORD_ONLY = frozenset(rules.PASSWORD_SPECIALS) - frozenset("_-.")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_SECRET_KEY = re.compile(r"^-{0,2}(new[-_]?)?(password|passwd|pass|pwd|pw|secret|credentials?)$", re.IGNORECASE)
_SAFE_VERB = re.compile(r"^[a-z-]{1,20}$")  # lowercase and '-' only: at most two character classes, never a password


def no_secrets_in_text(command: str = COMMAND) -> str:
    return (
        "Passwords are never taken from command text: the chat keeps the text of every command and it passes "
        f"through logs. Run `{command} reset-password <server...>` alone; it opens a private window where you "
        "enter the new password or have one generated."
    )


NO_SECRETS_IN_TEXT = no_secrets_in_text()


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
    """A gated tool call: the surface previews it and confirms it only on the requester's click."""

    tool: str
    arguments: dict[str, Any]
    verb: str


@dataclass(frozen=True)
class FormRequest:
    """A tool with a secret argument: the surface collects the rest of the arguments (the secret, a reason)
    in a private form, then previews it like any change. ``arguments`` holds what the text said."""

    tool: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ApprovalsRequest:
    """The approval requests the person may see (all of them, for an approver)."""


Request = Help | Problem | ReadRequest | ChangeRequest | FormRequest | ApprovalsRequest


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


def _split(typed: str, tokens: list[str], allowed_flags: set[str]) -> _Words | Problem:
    result = _Words()
    for token in tokens:
        if token.startswith("--") or (token.startswith("-") and len(token) > 1 and not token[1].isdigit()):
            name = "--" + token.lstrip("-").lower()
            if name not in allowed_flags:
                shown = name if _SAFE_VERB.match(name.lstrip("-")) else "this option"
                options = ", ".join(sorted(allowed_flags)) or "none"
                return Problem(f"`{typed}` does not take {shown} (options: {options}).")
            result.flags.add(name)
        else:
            result.words.append(token)
    return result


# -- the words after the verb -------------------------------------------------------------------


def _filters(verb: Verb, filters: Filters, words: list[str]) -> dict[str, Any] | Problem:
    arguments: dict[str, Any] = {}
    for word in words:
        key, sep, value = word.partition("=")
        key = key.lower()
        if not sep:
            key, value = filters.bare, word
        if key == filters.page:
            if not value.isdigit() or not 1 <= int(value) <= filters.max_page:
                return Problem(f"`{filters.page}` must be a whole number from 1.")
            arguments[filters.page] = int(value)
            continue
        if key not in filters.names:
            shown = f"`{key}`" if _SAFE_VERB.match(key) else "that filter"
            known = ", ".join([*filters.names, *([filters.page] if filters.page else [])])
            return Problem(f"`{verb.name}` has no filter {shown}; filters: {known}.")
        if not value:
            return Problem(f"`{key}=` needs a value.")
        target = filters.names[key]
        if target in arguments:
            return Problem(f"`{key}` is given twice.")
        arguments[target] = value.upper() if target in filters.upper else value
    return arguments


def _selection(verb: Verb, filters: Filters, words: list[str]) -> dict[str, Any] | Problem:
    """``stop tag=env=staging name=web``: the servers by the listing's filters (``name`` is a prefix). Every
    word is then a filter: a name among them would be ambiguous (a server, or a name filter?)."""
    bare = [word for word in words if "=" not in word]
    if bare:
        word = bare[0] if rules.problem_with_name(bare[0]) is None else "..."
        return Problem(
            f"`{verb.name}` takes either servers or `key=value` filters, not both: write `name={word}` to pick "
            "servers by how their names start, or name the servers alone."
        )
    found = _filters(verb, filters, words)
    return found if isinstance(found, Problem) else {"select": found}


ROLLOUT_WORDS = {"waves": "size", "pause": "pause_seconds"}


def _rollout(verb: Verb, words: list[str]) -> tuple[list[str], dict[str, Any]] | Problem:
    """``reboot tag=role=web waves=10 pause=30``: the wave size and pause, taken out of the other words.
    The ranges are the tool's (it names the field and the rule); here only whole numbers are checked."""
    if not verb.rolls_out:
        return words, {}
    rest: list[str] = []
    waves: dict[str, int] = {}
    for word in words:
        key, sep, value = word.partition("=")
        field = ROLLOUT_WORDS.get(key.lower()) if sep else None
        if field is None:
            rest.append(word)
            continue
        if field in waves:
            return Problem(f"`{key.lower()}` is given twice.")
        if not value.isdigit():
            return Problem(f"`{key.lower()}` must be a whole number (`waves=10` servers per wave, `pause=30` s).")
        waves[field] = int(value)
    if waves and "size" not in waves:
        return Problem("`pause` goes with `waves`: e.g. `waves=10 pause=30`.")
    return rest, ({"waves": waves} if waves else {})


def _usage_problem(verb: Verb, command: str) -> Problem:
    if len(verb.args) == 1:
        (arg,) = verb.args
        return Problem(f"`{verb.name}` takes exactly one {arg.word}: `{command} {verb.name} <{arg.word}>`.")
    said = " and ".join(arg.phrase for arg in verb.args)
    example = " ".join(arg.example for arg in verb.args)
    return Problem(f"`{verb.name}` takes {said}: `{command} {verb.name} {example}`.")


def _positional(verb: Verb, words: list[str], command: str) -> dict[str, Any] | Problem:
    if not verb.args:
        return Problem(f"`{verb.name}` takes no arguments.") if words else {}
    *leading, last = verb.args
    if last.many and not leading and not words:
        hint = f" ({last.hint})" if last.hint else ""
        return Problem(f"`{verb.name}` needs at least one {last.word}{hint}: `{command} {verb.name} {last.example}`.")
    several = last.many or last.rest
    if len(words) < len(verb.args) or (not several and len(words) != len(verb.args)):
        return _usage_problem(verb, command)
    arguments: dict[str, Any] = {arg.field: word for arg, word in zip(leading, words, strict=False)}
    tail = words[len(leading) :]
    if last.many:
        seen: set[str] = set()
        for word in tail:
            if word in seen:
                return Problem(f"`{word}` is listed twice.")
            seen.add(word)
        arguments[last.field] = list(tail)
    elif last.rest:
        arguments[last.field] = " ".join(tail)  # free text, kept as typed
    else:
        arguments[last.field] = tail[0]
    return arguments


def _secret_words(verb: Verb, words: list[str], command: str) -> Problem | None:
    """For a tool that takes a secret, a word that reads like one is refused before anything else."""
    for index, word in enumerate(words, start=1):
        if looks_like_password(word):
            what = verb.args[0].word if verb.args else "argument"
            return Problem(
                f"The {_ordinal(index)} word after `{verb.name}` looks like a password, not a {what}. "
                + no_secrets_in_text(command)
                + f" If it really is a {what}'s name, use the {what}'s id instead."
            )
    return None


def _tool_request(verb: Verb, spec: ToolSpec, typed: str, rest: list[str], command: str) -> Request:
    if verb.args and verb.args[-1].rest:
        words, flags = rest, set()  # free text is taken as typed: "--hard" in a description is words
    else:
        allowed = {flag.name for flag in verb.flags} | (set() if spec.gated else {SHARE})
        split = _split(typed, rest, allowed)
        if isinstance(split, Problem):
            return split
        words, flags = split.words, split.flags
    takes_servers = verb.select is None and bool(verb.args) and verb.args[-1].many
    if takes_servers and any(word.partition("=")[0].lower() in LIST_FILTERS for word in words if "=" in word):
        return Problem(f"`{verb.name}` takes server names or ids, not filters.")  # never echoes the word
    if spec.asks_for_secret and (refused := _secret_words(verb, words, command)) is not None:
        return refused
    rollout = _rollout(verb, words)
    if isinstance(rollout, Problem):
        return rollout
    words, waves = rollout
    if verb.select is not None and any("=" in word for word in words):
        found = _selection(verb, verb.select, words)
    elif verb.filters is not None:
        found = _filters(verb, verb.filters, words)
    else:
        found = _positional(verb, words, command)
    if isinstance(found, Problem):
        return found
    arguments = {**verb.fixed, **found, **waves}
    for flag in verb.flags:
        arguments[flag.field] = flag.on if flag.name in flags else flag.off
    if not spec.gated:
        return ReadRequest(spec.name, arguments, SHARE in flags)
    if spec.asks_for_secret:
        return FormRequest(spec.name, arguments)
    return ChangeRequest(spec.name, arguments, verb.name)


def parse(
    text: str,
    specs: Mapping[str, ToolSpec] | None = None,
    *,
    command: str = COMMAND,
    verbs: tuple[Verb, ...] = VERBS,
) -> Request:
    """The request ``text`` (what follows the command) asks for; never raises. ``specs`` is the
    registry's (``registry.specs``); without it, the catalog's."""
    if len(text) > MAX_TEXT_CHARS:
        return Problem(f"That command is too long (over {MAX_TEXT_CHARS} characters).")
    try:
        tokens = shlex.split(_normalise(text))
    except ValueError:
        return Problem('The command has an unbalanced quote; quote text like `"a description"`.')
    if not tokens:
        return Help()
    typed, rest = tokens[0].lower(), tokens[1:]
    # Checked before anything else, for every verb: a secret offered in the text is refused outright.
    if any(_has_secret_key(token) for token in rest) or _has_secret_key(tokens[0]):
        return Problem(no_secrets_in_text(command))

    verb = by_word(verbs).get(typed)
    if verb is None:
        shown = f"`{typed}`" if _SAFE_VERB.match(typed) else "that command"
        return Help(problem=f"I don't know {shown}.")
    if verb.name == HELP_VERB:
        return Help()
    if verb.name == APPROVALS_VERB:
        split = _split(typed, rest, set())
        if isinstance(split, Problem):
            return split
        return Problem(f"`{verb.name}` takes no arguments.") if split.words else ApprovalsRequest()
    spec = (catalog() if specs is None else specs).get(verb.tool or "")
    if spec is None:
        return Problem(f"`{verb.name}` is not offered here.")
    return _tool_request(verb, spec, typed, rest, command)
