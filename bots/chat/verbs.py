"""The chat verbs: one table row per verb, pointing at the registry tool it calls.

A row says which tool a verb calls, which of the tool's arguments the words after the verb fill (in
order), which ``--flags`` set an argument, and how a listing's ``key=value`` filters map to arguments.
Everything else comes from the tool's spec: whether the verb is a read (answered at once, ``--share``
allowed) or a change (previewed, confirmed by a click), whether it takes a secret (then the surface asks
for it in a private form, never in the text), and the title the help shows. So adding a tool to the chat
is adding a row here; the parser (``parse``) and the help are generated from the table.

Surface-neutral: no chat SDK is imported here, so a second chat surface reuses the table unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from flexus_ops.core.tools import ToolSpec
from flexus_ops.registry.inputs import SELECTION_FILTERS

COMMAND = "/flexus"  # how people call the bot; the Slack manifests declare the same slash command
SHARE = "--share"  # every read takes it: post the answer where everyone in the conversation sees it
SCREEN_ROWS = 20  # one screenful of a listing; the rest is counted, not shown
HELP_VERB = "help"
APPROVALS_VERB = "approvals"


@dataclass(frozen=True)
class Arg:
    """One argument of the tool, filled by the words after the verb (in the order of ``Verb.args``)."""

    field: str  # the tool's input field
    word: str  # how the usage names it: <server>, <job-id>
    phrase: str  # how a sentence names it: "a server", "its new name"
    example: str  # a value for the usage line a mistake is answered with
    many: bool = False  # one or more words, each at most once (the last argument only)
    rest: bool = False  # the rest of the text as typed: free text is never split into --flags (the last only)
    hint: str = ""  # said when it is missing: "a name or an id"


@dataclass(frozen=True)
class Flag:
    """``--hard``: the tool's ``field`` is ``on`` when the flag is given and ``off`` when it is not, so the
    request always names the choice the preview shows."""

    name: str
    field: str
    on: Any
    off: Any


@dataclass(frozen=True)
class Filters:
    """``key=value`` words that become a listing's filter arguments."""

    names: Mapping[str, str]  # the word people type -> the tool's field
    examples: tuple[str, ...]  # shown in the help
    bare: str = "name"  # a word without '=' filters by this one, the most common wish
    upper: frozenset[str] = frozenset({"status"})  # fields the cloud spells in capitals
    page: str | None = "page"  # the word (and field) of the page number; None: the filters have no pages
    max_page: int = 100_000


@dataclass(frozen=True)
class Verb:
    """A row of the table. ``tool`` is None only for the chat's own verbs (help, approvals)."""

    name: str
    tool: str | None = None
    args: tuple[Arg, ...] = ()
    flags: tuple[Flag, ...] = ()
    filters: Filters | None = None
    select: Filters | None = None  # a change's servers by the listing's filters instead of by name
    rolls_out: bool = False  # takes waves=N [pause=S]: a rolling change
    fixed: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # on every call
    aliases: tuple[str, ...] = ()
    about: str = ""  # what the help adds to the tool's title (for the chat's own verbs: all it says)

    @property
    def words(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def usage(self, command: str = COMMAND) -> str:
        parts = [command, self.name]
        if self.filters is not None:
            parts += [f"[{example}]" for example in self.filters.examples]
        parts += [f"[{flag.name}]" for flag in self.flags]
        if self.rolls_out:
            parts += ["[waves=10 [pause=30]]"]
        parts += [f"<{arg.word}...>" if arg.many else f"<{arg.word}>" for arg in self.args]
        return " ".join(parts)


LIST_FILTERS = MappingProxyType(
    {"status": "status", "name": "name", "tag": "tag", "ip": "ip", "not-tag": "not_tag", "flavor": "flavor"}
)
SELECT_FILTERS = Filters(LIST_FILTERS, examples=("tag=env=staging", "name=web"), page=None)
"""``/flexus stop tag=env=staging name=web``: the listing's filters pick a change's servers (name: a prefix)."""
SERVER = Arg("server", "server", "a server", "web-01")
SERVERS = Arg("servers", "server", "servers", "web-01", many=True, hint="a name or an id")
JOB_ID = Arg("job_id", "job-id", "a job-id", "8a2f11e0")
ACTION_ID = Arg("action_id", "action-id", "an action-id", "9dccc7d6")
NEW_NAME = Arg("name", "new-name", "its new name", "web-legacy-01")
DESCRIPTION = Arg("description", "text", "the text", '"main shop node"', rest=True)
HARD = Flag("--hard", "type", on="HARD", off="SOFT")

VERBS: tuple[Verb, ...] = (
    Verb(HELP_VERB, aliases=("-h", "--help", "?"), about="this help"),
    Verb(
        "list",
        "flexus_list_servers",
        filters=Filters(LIST_FILTERS, examples=("status=ACTIVE", "name=web", "tag=env=prod", "ip=10.0", "page=2")),
        fixed=MappingProxyType({"limit": SCREEN_ROWS}),
        aliases=("ls",),
    ),
    Verb("show", "flexus_show_server", (SERVER,)),
    Verb("job", "flexus_show_job", (JOB_ID,)),
    Verb("action", "flexus_show_action", (ACTION_ID,)),
    Verb(APPROVALS_VERB, about="Approval requests waiting (all of them, for an approver)"),
    Verb("start", "flexus_start_servers", (SERVERS,), select=SELECT_FILTERS, rolls_out=True),
    Verb("stop", "flexus_stop_servers", (SERVERS,), (HARD,), select=SELECT_FILTERS, rolls_out=True),
    Verb("reboot", "flexus_reboot_servers", (SERVERS,), (HARD,), select=SELECT_FILTERS, rolls_out=True),
    Verb("rename", "flexus_update_server", (SERVER, NEW_NAME), about="its name"),
    Verb("describe", "flexus_update_server", (SERVER, DESCRIPTION), about="its description"),
    Verb(
        "reset-password",
        "flexus_reset_servers_password",
        (SERVERS,),
        aliases=("reset_password", "resetpassword", "reset-pw"),
    ),
)


def by_word(verbs: tuple[Verb, ...] = VERBS) -> dict[str, Verb]:
    """Every word people may type (names and aliases) -> its row."""
    return {word: verb for verb in verbs for word in verb.words}


def catalog() -> dict[str, ToolSpec]:
    """The registry's catalog, for callers without a Registry at hand (tests, a parser in isolation). A
    running surface passes ``registry.specs`` instead. Imported late: the table itself needs no catalog."""
    from flexus_ops.registry.catalog import TOOLS

    return {spec.name: spec for spec in TOOLS}


def problems(verbs: tuple[Verb, ...], specs: Mapping[str, ToolSpec]) -> list[str]:
    """What in the table does not match the registry: a tool that does not exist, an argument, flag or
    filter that is not a field of the tool's input, a word claimed twice. Empty when the table is sound;
    a surface refuses to start otherwise, so a renamed field fails at start, not on someone's command."""
    found: list[str] = []
    seen: dict[str, str] = {}
    for verb in verbs:
        for word in verb.words:
            if word in seen:
                found.append(f"`{word}` is claimed by both {seen[word]} and {verb.name}")
            seen[word] = verb.name
        if verb.tool is None:
            if verb.name not in (HELP_VERB, APPROVALS_VERB):
                found.append(f"{verb.name}: names no tool")
            continue
        spec = specs.get(verb.tool)
        if spec is None:
            found.append(f"{verb.name}: no tool {verb.tool} in the registry")
            continue
        fields = set(spec.input_model.model_fields)
        named = [arg.field for arg in verb.args] + [flag.field for flag in verb.flags] + list(verb.fixed)
        if verb.filters is not None:
            named += [*verb.filters.names.values(), *([verb.filters.page] if verb.filters.page else [])]
        if verb.select is not None:
            named.append("select")
            found += [
                f"{verb.name}: a selection has no filter {name!r}"
                for name in verb.select.names.values()
                if name not in SELECTION_FILTERS
            ]
        found += [f"{verb.name}: {verb.tool} has no argument {name!r}" for name in named if name not in fields]
        found += [
            f"{verb.name}: a secret ({name}) is never taken from chat text"
            for name in named
            if name in spec.secret_fields
        ]
        if any(arg.many or arg.rest for arg in verb.args[:-1]):
            found.append(f"{verb.name}: only the last argument may take several words")
        if verb.filters is not None and verb.args:
            found.append(f"{verb.name}: a listing's words are filters; it takes no other arguments")
    return found


def help_text(
    specs: Mapping[str, ToolSpec],
    *,
    command: str = COMMAND,
    needs_approval: Callable[[str], bool] = lambda _tool: False,
    verbs: tuple[Verb, ...] = VERBS,
) -> str:
    """The help, from the table and the specs' titles: reads first, then changes, one line per verb.
    ``needs_approval`` is the policy's say (it can change without a restart of the bot)."""
    reads: list[str] = []
    changes: list[str] = []
    for verb in verbs:
        if verb.name == HELP_VERB:
            continue
        spec = specs.get(verb.tool) if verb.tool else None
        if verb.tool is not None and spec is None:
            continue  # not in this registry: nothing to offer
        notes = [verb.about] if verb.about else []
        if spec is not None and spec.asks_for_secret:
            notes.append("opens a private window")
        if spec is not None and spec.gated and needs_approval(spec.name):
            notes.append("an approver must approve it")
        said = "; ".join(notes)
        line = f"• `{verb.usage(command)}`: " + (f"{spec.title}" + (f" ({said})" if said else "") if spec else said)
        (changes if spec is not None and spec.gated else reads).append(line)
    return "\n".join(
        [
            f"*`{command}` runs Flexus L operations through the same gate as every other surface.*",
            f"Reads (only you see the answer; add `{SHARE}` to post it in the channel):",
            *reads,
            "Changes (a preview first; nothing happens until you press Confirm):",
            *changes,
            f"Servers are names or ids, several at once: `{command} stop web-01 web-02`; or the list's filters "
            f"(name = how names start): `{command} stop tag=env=staging name=web`.",
        ]
    )
