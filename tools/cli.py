"""The ``flexus-ops`` command: the CLI surface, and the launcher of the MCP server and the sandbox.

Each subcommand imports what it needs only when it runs, so ``flexus-ops mcp`` starts fast and
``flexus-ops sim`` never loads the MCP SDK. Like the other surfaces, it adds no logic: it parses,
asks the person, and calls the registry.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__

if TYPE_CHECKING:
    from .core.tools import Caller
    from .registry.registry import Registry

# The exit codes, in one place (README, "The CLI", prints the same table). `failure` maps an exception to
# its code; `main` is the only place that turns exceptions into codes.
EXIT_OK = 0  # done, or queued for approval (the JSON says which); a completed change whose servers
#              partly failed is 0 too: the JSON reports each server's outcome
EXIT_REFUSED = 1  # the gate said no (including "not confirmed" at the y/N prompt)
EXIT_USAGE = 2  # bad input: arguments, JSON, a server that does not exist (argparse exits 2 as well)
EXIT_CLOUD = 3  # the cloud answered with an error, or no answer came to a request that cannot have applied
EXIT_STORE = 4  # store, state dir, configuration or policy
EXIT_UNKNOWN = 5  # a write may have been applied: settle by looking at the servers, never retry blindly
EXIT_INTERNAL = 70  # a bug (EX_SOFTWARE from sysexits.h)
EXIT_SIGINT, EXIT_SIGPIPE, EXIT_SIGTERM = 130, 141, 143  # 128 + the signal, what shells report


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so asyncio unwinds it the same way: tasks are cancelled and every
    ``finally`` (closing the store, signing its checkpoint) runs before the process exits 143."""


def _debug() -> bool:
    return os.environ.get("FLEXUS_DEBUG") == "1"


def _one_line(exc: BaseException, limit: int = 300) -> str:
    # Only the first line: a database error's later lines carry the SQL and its parameters.
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else ""
    return text if len(text) <= limit else text[:limit] + "..."


def failure(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one line a person reads for ``exc``: the component, the cause, the next step."""
    try:
        from .core import errors
        from .core.errors import Refused
        from .registry.targets import TargetError
    except Exception:  # the classifier must never fail; without its classes everything is a bug
        return EXIT_INTERNAL, _internal(exc)

    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return failure(exc.exceptions[0])  # a task group's wrapper around the one error that happened
    if isinstance(exc, BrokenPipeError):
        return EXIT_SIGPIPE, "output closed by the reader"
    message = " ".join(str(exc).split())  # our messages are one line already; make sure of it
    if isinstance(exc, errors.OutcomeUnknown) or (isinstance(exc, errors.TransportError) and exc.may_have_applied):
        return EXIT_UNKNOWN, (
            f"outcome unknown: {message}"
            + ("" if isinstance(exc, errors.TransportError) else "; do not retry: check the servers' state first")
        )
    if isinstance(exc, errors.TransportError):
        return EXIT_CLOUD, f"network: {message}; nothing was changed: check the network and the endpoint, then retry"
    if isinstance(exc, errors.JobTimeout):
        return EXIT_CLOUD, f"cloud: {message}"
    if isinstance(exc, errors.CloudError):
        hints: list[tuple[type[errors.CloudError], str]] = [
            (errors.AuthenticationError, "check the credentials (HUAWEICLOUD_SDK_AK/SK or FLEXUS_IAM_*)"),
            (errors.PermissionDenied, "the credentials lack this permission: ask the cloud account's administrator"),
            (errors.Throttled, "the API is rate-limiting: wait a minute, then retry"),
            (errors.ServiceError, "the cloud failed: retry later"),
        ]
        hint = next((text for cls, text in hints if isinstance(exc, cls)), "check the request")
        return EXIT_CLOUD, f"cloud: {message}; {hint}"
    if isinstance(exc, errors.StoreError):
        return EXIT_STORE, message  # already "store: <cause>; <next step>"
    if isinstance(exc, errors.ConfigurationError):
        return EXIT_STORE, f"configuration: {message}; see README.md, Configuration"
    if isinstance(exc, Refused):
        return EXIT_REFUSED, f"refused: {message}"
    if isinstance(exc, errors.InvalidInput | TargetError):
        return EXIT_USAGE, f"bad input: {message}"
    if isinstance(exc, errors.FlexusError):
        return EXIT_REFUSED, f"error: {message}"
    if type(exc).__module__.split(".")[0] in ("sqlalchemy", "psycopg", "sqlite3"):
        # A database error the store did not translate into a StoreError.
        return EXIT_STORE, f"store: {_one_line(exc)}; check FLEXUS_STORE_URL and that the database is reachable"
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return EXIT_STORE, (
            f"file system: {exc.strerror or _one_line(exc)}{where}; check that FLEXUS_STATE_DIR (or the path named) "
            "is a directory you can write"
        )
    return EXIT_INTERNAL, _internal(exc)


def _internal(exc: BaseException) -> str:
    return f"internal error ({type(exc).__name__}): {_one_line(exc)}; this is a bug, please report it"


def _say(line: str) -> None:
    """One line on stderr; a closed stderr is no reason to fail again."""
    with contextlib.suppress(OSError, ValueError):
        print(f"flexus-ops: {line}", file=sys.stderr, flush=True)


def _quiet_libraries() -> None:
    # Request URLs are noise on a terminal and stdout belongs to MCP; warnings still show.
    for name in ("httpx", "httpcore", "mcp", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _registry(read_only: bool = False) -> Registry:
    from .config import Settings
    from .registry.registry import Registry

    return Registry.from_settings(Settings.load(), read_only=read_only)


def _caller() -> Caller:
    from .core.tools import Caller
    from .gate.policy import os_principal

    return Caller(principal=os_principal(), surface="cli")


def _run(
    body: Callable[[Registry], Awaitable[int]],
    *,
    read_only: bool = False,
    registry_for: Callable[[], Registry] | None = None,
) -> int:
    """Run one async command against a registry (by default the one the environment configures). Errors
    propagate to ``main``, which alone turns them into one line and an exit code."""

    # A command's failure is its one line; the gate's and the store's own warnings on the way there
    # (a lease not renewed, a checkpoint not written) are for a server's log, not a person's terminal.
    # Cloud retries stay: each one is a line the person should see.
    for name in ("flexus_ops.gate", "flexus_ops.store", "flexus_ops.audit"):
        logging.getLogger(name).setLevel(logging.ERROR)

    async def main() -> int:
        registry = registry_for() if registry_for is not None else _registry(read_only)
        try:
            code = await body(registry)
        except BaseException:
            # Best effort: a store that just failed may fail to close too, and must not hide the first error.
            with contextlib.suppress(Exception):
                await registry.aclose()
            raise
        await registry.aclose()
        return code

    return asyncio.run(main())


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


async def _read_answer() -> str:
    """One line from the terminal. Read in a daemon thread, unbuffered: a Ctrl-C at the prompt then ends
    the command at once (a worker thread of asyncio's own would be waited for, until Enter), and no
    buffered-reader lock is left held by the abandoned thread when the interpreter exits."""
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[str] = loop.create_future()

    def deliver(text: str) -> None:
        if not answered.done():
            answered.set_result(text)

    def read() -> None:
        try:
            text = os.read(sys.stdin.fileno(), 1024).decode(errors="replace")
        except OSError:
            text = ""
        with contextlib.suppress(RuntimeError):  # the loop is gone: the command already ended
            loop.call_soon_threadsafe(deliver, text)

    threading.Thread(target=read, name="flexus-ops-prompt", daemon=True).start()
    return await answered


class ProgressBar:
    """A one-line progress bar on stderr (only on a terminal)."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()

    async def __call__(self, done: float, total: float | None, message: str) -> None:
        if not self.enabled:
            return
        if total:
            filled = int(30 * done / total)
            bar = "#" * filled + "-" * (30 - filled)
            print(f"\r  [{bar}] {message}", end="", file=sys.stderr, flush=True)
            if done >= total:
                print(file=sys.stderr)
        else:
            print(f"\r  {message}", end="", file=sys.stderr, flush=True)


# -- mcp ------------------------------------------------------------------------------------------


def cmd_mcp(args: argparse.Namespace) -> int:
    _quiet_libraries()
    from .mcp_server import banner, build_server

    registry = _registry(args.read_only)
    if args.transport == "stdio":
        banner(registry, "stdio", "stdin/stdout")
        return _serve_stdio(registry, build_server(registry))
    import uvicorn

    from .core.errors import ConfigurationError, InvalidInput
    from .mcp_http import has_token_principals, http_app, new_session_token
    from .serving import Drain, DrainingServer

    session_token = None if has_token_principals(registry) else new_session_token()
    drain = Drain(on_drain=[registry.start_draining])
    try:
        app = http_app(
            registry, args.host, args.port, args.allowed_origin or None, session_token=session_token, drain=drain
        )
    except ValueError as exc:
        raise InvalidInput("--host", str(exc)) from None
    url = f"http://{args.host}:{args.port}/mcp"
    banner(registry, "streamable HTTP", url)
    token_path = None
    if session_token is not None:
        token_path = _hand_over_session_token(session_token, url, args.token_file, registry.settings.state_dir)
    server = DrainingServer(
        uvicorn.Config(app, host=args.host, port=args.port, log_level="warning"), drain, args.grace_seconds
    )

    async def serve() -> None:
        try:
            await server.serve()
        except SystemExit:
            if server.started:
                raise
            # uvicorn has logged why (the address is in use, or not ours to take) and exits 3; say it our way.
            raise ConfigurationError(f"cannot listen on {args.host}:{args.port}; choose another --port") from None
        finally:
            if token_path is not None:
                token_path.unlink(missing_ok=True)  # the session token dies with this server
            with contextlib.suppress(Exception):
                await registry.aclose()  # signs the audit checkpoint for what this process appended

    asyncio.run(serve())
    return server.exit_code


def _exit_now(code: int) -> None:
    """End the process at once, skipping the interpreter's wait for threads: the stdio transport reads
    stdin in a worker thread that no cancellation can wake, and waiting for it is why Ctrl-C needed Enter."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _exit_later(code: int, seconds: float) -> None:
    """A watchdog: however a shutdown goes, the process is gone ``seconds`` from now."""
    timer = threading.Timer(seconds, _exit_now, (code,))
    timer.daemon = True
    timer.start()


def _serve_stdio(registry: Registry, server: Any) -> int:
    """MCP on stdin/stdout until the client closes stdin (exit 0), SIGINT (130) or SIGTERM (143).

    On a signal the registry is closed with a short bound and the process ends: a call still in flight
    stays in the store as it was, for the settling process; it is never re-sent from here."""

    def stop(stopped: asyncio.Future[int], code: int) -> None:
        if not stopped.done():
            stopped.set_result(code)

    async def serve() -> int:
        loop = asyncio.get_running_loop()
        stopped: asyncio.Future[int] = loop.create_future()
        for signum, code in ((signal.SIGINT, EXIT_SIGINT), (signal.SIGTERM, EXIT_SIGTERM)):
            loop.add_signal_handler(signum, stop, stopped, code)
        serving = asyncio.ensure_future(server.run_stdio_async())
        await asyncio.wait([serving, stopped], return_when=asyncio.FIRST_COMPLETED)
        if serving.done() and not stopped.done():
            error = serving.exception()
            if error is None:  # the client closed stdin: the reader thread has ended, a normal exit is safe
                await registry.aclose()
                return EXIT_OK
            code = _report(error)
        else:
            code = stopped.result()
            _say("interrupted" if code == EXIT_SIGINT else "terminated")
            serving.cancel()
        _exit_later(code, 2.0)  # in case closing the store hangs
        with contextlib.suppress(Exception):
            await asyncio.wait_for(registry.aclose(), 1.5)
        _exit_now(code)
        return code  # not reached

    return asyncio.run(serve())


def _hand_over_session_token(token: str, url: str, token_file: str | None, state_dir: Path) -> Path | None:
    """The policy names no token holders, so this server made a token that stands for the OS user. On a
    terminal it is shown once; otherwise (or with --token-file) it goes to a 0600 file whose path is
    logged. The token itself is never logged."""
    import os

    from .gate.private import open_private

    if token_file is not None or not sys.stderr.isatty():
        path = Path(token_file) if token_file else state_dir / "mcp-http.token"
        fd = open_private(path, os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(token + "\n")
        print(f"flexus-ops: MCP session token for this server written to {path} (mode 0600)", file=sys.stderr)
        return path
    print(
        f"  session token (shown once; it stands for you, {_caller().principal}):\n    {token}\n"
        f'  client config: {{"url": "{url}", "headers": {{"Authorization": "Bearer {token}"}}}}',
        file=sys.stderr,
    )
    return None


# -- slack ----------------------------------------------------------------------------------------


def cmd_slack(args: argparse.Namespace) -> int:
    _quiet_libraries()
    from .bots.slack.app import main as run_slack  # bolt and aiohttp load only for this command

    return run_slack(
        host=args.host, port=args.port, mode=args.mode, read_only=args.read_only, grace_seconds=args.grace_seconds
    )


# -- tools ----------------------------------------------------------------------------------------


def cmd_tools(args: argparse.Namespace) -> int:
    registry = _registry()
    if args.action == "export":
        from .mcp_server import tool_catalog

        text = json.dumps(tool_catalog(registry), indent=2, ensure_ascii=False) + "\n"
        if args.output == "-":
            sys.stdout.write(text)
        else:
            with open(args.output, "w", encoding="utf-8") as handle:
                handle.write(text)
            print(f"wrote {args.output}", file=sys.stderr)
        return EXIT_OK
    print(f"{'tool':32} {'safety':12} {'approval':9} title")
    for spec in registry.tools():
        approval = "yes" if registry.policy.needs_approval(spec.name) else ""
        print(f"{spec.name:32} {spec.safety.value:12} {approval:9} {spec.title}")
    print(f"\ncloud: {registry.describe_target()}", file=sys.stderr)
    return EXIT_OK


# -- call -----------------------------------------------------------------------------------------


def _load_arguments(args: argparse.Namespace) -> dict[str, Any]:
    from .core.errors import InvalidInput

    try:
        arguments = json.loads(args.args) if args.args else {}
    except json.JSONDecodeError as exc:
        raise InvalidInput("--args", f"must be a JSON object: {exc.msg} at character {exc.pos}") from None
    if not isinstance(arguments, dict):
        raise InvalidInput("--args", 'must be a JSON object, like \'{"servers": ["web-01"]}\'')
    if args.confirm:
        arguments["confirmation_token"] = args.confirm
    return arguments


def _ask_secret(field: str) -> str:
    from .core.errors import InvalidInput

    first = getpass.getpass(f"{field}: ")
    if getpass.getpass(f"{field} (again): ") != first:
        raise InvalidInput(field, "the two entries differ")
    return first


def cmd_call(args: argparse.Namespace) -> int:
    from .core.plans import ChangeOutput
    from .registry.render import plan_text, render

    async def body(registry: Registry) -> int:
        spec = registry.spec(args.tool)
        arguments = _load_arguments(args)
        if args.prompt_secret:
            for field in sorted(spec.secret_fields):
                arguments[field] = _ask_secret(field)
        caller = _caller()
        if arguments.get("waves"):
            # This process owns the rollout it confirms: it waits to the end (exiting would stop the rollout).
            arguments.setdefault("wait", True)
        output = await registry.call(caller, spec.name, arguments, progress=ProgressBar(), wait_seconds=math.inf)
        if (
            isinstance(output, ChangeOutput)
            and output.preview is not None
            and not arguments.get("dry_run")
            and _interactive()
            and output.preview.runnable
        ):
            # The plan, without the token and the machine-facing next step: the person answers here.
            print("PREVIEW - nothing has changed.\n" + plan_text(output.preview.plan), file=sys.stderr)
            # The prompt goes to stderr: stdout carries only the JSON result.
            print("Run this plan? [y/N] ", end="", file=sys.stderr, flush=True)
            answer = (await _read_answer()).strip().lower()
            if answer not in ("y", "yes"):
                print("not confirmed; nothing was changed", file=sys.stderr)
                return EXIT_REFUSED
            # The answer confirms the one preview just shown, by its id: it is consumed with that action.
            result = await registry.confirm_action(
                caller, output.preview.action_id, progress=ProgressBar(), wait=True, wait_seconds=math.inf
            )
            output = ChangeOutput(result=result)
        if sys.stderr.isatty():
            print(render(output), file=sys.stderr)
        _print_json(output.model_dump(mode="json", exclude_none=True))
        return EXIT_OK

    return _run(body)


# -- approvals ------------------------------------------------------------------------------------


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_approvals(args: argparse.Namespace) -> int:
    from .registry.render import result_text

    async def body(registry: Registry) -> int:
        caller = _caller()
        if args.action == "list":
            await registry.settle_briefly()  # show what actions came to, not what a crash left behind
            pending = await registry.pending_approvals(caller)
            if args.json:
                _print_json(pending)
                return EXIT_OK
            if not pending:
                print("no approval requests are waiting")
            for row in pending:
                mine = " (yours)" if row["yours"] else ""
                until = _when(row["expires_at"])
                print(f"{row['action_id']}  {row['tool']}  by {row['requested_by']}{mine}  until {until}")
                print(f"    reason: {row['reason']}\n    arguments: {row['arguments']}")
            return EXIT_OK
        if args.action == "approve":
            # An approved rollout runs in this process: it waits to the end, showing each wave.
            result = await registry.approve(
                caller, args.action_id, args.note, progress=ProgressBar(), wait=True, wait_seconds=math.inf
            )
            print(result_text(result))
            return EXIT_OK
        if args.action == "reject":
            await registry.reject(caller, args.action_id, args.note)
            print(f"{args.action_id}: rejected")
            return EXIT_OK
        if not sys.stdout.isatty() and not args.force:
            print("refusing to print a password to a pipe or file; run on a terminal (or --force)", file=sys.stderr)
            return EXIT_REFUSED
        secret = await registry.reveal(caller, args.action_id)
        print(f"generated password (shown once, now erased): {secret}")
        return EXIT_OK

    return _run(body)


# -- audit ----------------------------------------------------------------------------------------


async def _verify_audit(registry: Registry, checkpoint_files: list[str] | None) -> int:
    from pathlib import Path

    files = [Path(name) for name in checkpoint_files] if checkpoint_files else None
    missing = [str(path) for path in files or [] if not path.is_file()]
    if missing:
        print(f"error: no such checkpoint file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    report = await registry.records.audit_report(files)  # never waits for settling
    if report.problems:
        print(f"audit log TAMPERED ({len(report.problems)} problem(s)):")
        for problem in report.problems + report.unverifiable:
            print(f"  - {problem}")
        return EXIT_REFUSED
    if report.keyed_from is None:
        keyed = "no keyed records yet" if report.records else "empty"
    elif report.legacy_records:
        keyed = f"records 1-{report.legacy_records} legacy SHA-256, keyed (HMAC-SHA256) from record {report.keyed_from}"
    else:
        keyed = f"keyed (HMAC-SHA256) from record {report.keyed_from}"
    keys = f", key(s) {', '.join(report.key_ids)}" if report.key_ids else ""
    where = ", ".join(report.checkpoint_files) or "no checkpoint file"
    checked = f"{report.checkpoints_checked} signed checkpoint(s) checked ({where})"
    if report.unverifiable:
        print(f"audit log NOT FULLY VERIFIED: {report.records} record(s), {keyed}{keys}; {checked}")
        for gap in report.unverifiable:
            print(f"  - {gap}")
        return EXIT_USAGE
    print(f"audit log intact: {report.records} record(s), {keyed}{keys}; {checked}")
    if report.keyed_from is not None and report.keyed_recorded:
        print(f"  keyed from the record this state dir saw it keyed from ({report.keyed_recorded})")
    if report.keyed_from is None and report.records:
        # A log rewritten whole into unkeyed records needs no key: only a record of it being keyed tells.
        print(
            "  note: no keyed records, and this state dir never saw this log keyed: a log rewritten without "
            "the audit key into unkeyed records would look the same (a state dir that wrote to it keyed, or its "
            "checkpoints, would tell)"
        )
    if not report.checkpoints_checked and report.records:
        # Without a checkpoint, deleting the newest records and moving the head back goes unnoticed.
        print("  note: no checkpoints were checked, so truncation of the newest records cannot be ruled out")
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    async def body(registry: Registry) -> int:
        if args.action == "verify":
            return await _verify_audit(registry, args.checkpoints)
        await registry.settle_briefly()
        records = (await registry.records.audit_records())[-args.limit :]
        if args.json:
            _print_json([record.__dict__ for record in records])
            return EXIT_OK
        for record in records:
            detail = record.detail
            summary = (
                detail.get("plan") or detail.get("outcome") or detail.get("difference") or detail.get("note") or ""
            )
            jobs = f" jobs={','.join(detail['job_ids'])}" if detail.get("job_ids") else ""
            print(
                f"{record.seq:5} {_when(record.at)} {record.event:18} {record.person or '-':12} "
                f"{record.surface or '-':9} {record.tool or '-':30} {summary}{jobs}"
            )
        return EXIT_OK

    return _run(body)


# -- token ----------------------------------------------------------------------------------------


def cmd_token(args: argparse.Namespace) -> int:
    import secrets

    from .gate.policy import token_principal

    token = "fxt_" + secrets.token_urlsafe(32)
    print(f"bearer token for {args.person} (shown once; give it to their MCP client):\n  {token}\n")
    print("add this principal to their entry in the policy file:")
    print(f'  principals = ["{token_principal(token)}"]')
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from .demo import cmd_demo  # the tour's own module: loaded only when asked for

    return cmd_demo(args)


# -- parser ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flexus-ops",
        description="Operate Huawei Cloud Flexus L instances safely. With no credentials configured, "
        "everything runs against the embedded sandbox cloud.",
    )
    parser.add_argument("--version", action="version", version=f"flexus-ops {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    mcp = commands.add_parser("mcp", help="run the MCP server (stdio by default)")
    mcp.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    mcp.add_argument("--host", default="127.0.0.1")
    mcp.add_argument("--port", type=int, default=8765)
    mcp.add_argument("--read-only", action="store_true", help="offer only tools that change nothing")
    mcp.add_argument("--allowed-origin", action="append", help="browser origin allowed to call (repeatable)")
    mcp.add_argument(
        "--token-file",
        help="HTTP without token principals in the policy: where to write the session token "
        "(default: <state dir>/mcp-http.token when stderr is not a terminal)",
    )
    mcp.add_argument(
        "--grace-seconds",
        type=float,
        default=10.0,
        help="HTTP: on SIGTERM/SIGINT, how long calls in flight may take to finish (readiness says no meanwhile)",
    )
    mcp.set_defaults(handler=cmd_mcp)

    slack = commands.add_parser(
        "slack", help="run the Slack bot: Socket Mode if SLACK_APP_TOKEN is set, else HTTP at /slack/events"
    )
    slack.add_argument("--host", default="127.0.0.1", help="HTTP mode: address to listen on")
    slack.add_argument("--port", type=int, default=3000, help="HTTP mode: port to listen on")
    slack.add_argument("--mode", choices=["auto", "socket", "http"], default="auto")
    slack.add_argument("--read-only", action="store_true", help="offer only tools that change nothing")
    slack.add_argument(
        "--grace-seconds",
        type=float,
        default=10.0,
        help="HTTP mode, on SIGTERM/SIGINT: how long events in flight may finish (default: %(default)s)",
    )
    slack.set_defaults(handler=cmd_slack)

    # Listed for --help only: `main` hands `sim` to the sandbox's own parser, so other commands never
    # import the sandbox (a third of a second at every start of `flexus-ops mcp`).
    commands.add_parser("sim", help="run the sandbox cloud (ECS + IAM simulator) as an HTTP server", add_help=False)

    tools = commands.add_parser("tools", help="the tool catalog: list it, or export it as JSON")
    tools.add_argument("action", nargs="?", choices=["list", "export"], default="list")
    tools.add_argument("--output", default="manifests/tools.json", help="export target, or - for stdout")
    tools.set_defaults(handler=cmd_tools)

    call = commands.add_parser("call", help="call a tool (changes are previewed, then confirmed)")
    call.add_argument("tool")
    call.add_argument("--args", default="{}", help="the arguments as a JSON object")
    call.add_argument("--confirm", metavar="TOKEN", help="the confirmation token from a preview")
    call.add_argument("--prompt-secret", action="store_true", help="ask for secret arguments (a password) privately")
    call.set_defaults(handler=cmd_call)

    approvals = commands.add_parser("approvals", help="approval requests: list, approve, reject, reveal")
    approval_actions = approvals.add_subparsers(dest="action", required=True)
    listing = approval_actions.add_parser("list")
    listing.add_argument("--json", action="store_true")
    for verb in ("approve", "reject"):
        sub = approval_actions.add_parser(verb)
        sub.add_argument("action_id")
        sub.add_argument("--note")
    reveal = approval_actions.add_parser("reveal", help="show a generated password once (requester only)")
    reveal.add_argument("action_id")
    reveal.add_argument("--force", action="store_true", help="print even when stdout is not a terminal")
    approvals.set_defaults(handler=cmd_approvals)

    audit = commands.add_parser("audit", help="show the audit log, or verify its keyed chain and checkpoints")
    audit.add_argument("action", nargs="?", choices=["show", "verify"], default="show")
    audit.add_argument("--limit", type=int, default=50)
    audit.add_argument("--json", action="store_true")
    audit.add_argument(
        "--checkpoints",
        nargs="+",
        metavar="FILE",
        help="verify: checkpoint files or saved flexus_ops.audit logs to check the log against "
        "(default: the state dir's audit-checkpoints.jsonl)",
    )
    audit.set_defaults(handler=cmd_audit)

    token = commands.add_parser("token", help="make a bearer token for the MCP HTTP transport")
    token.add_argument("action", choices=["new"])
    token.add_argument("--person", required=True)
    token.set_defaults(handler=cmd_token)

    demo = commands.add_parser("demo", help="a guided tour on the sandbox cloud")
    demo.add_argument("--job-seconds", type=float, default=2.0)
    demo.set_defaults(handler=_demo)
    return parser


def _dispatch(arguments: list[str]) -> int:
    if arguments[:1] == ["sim"]:
        from .sandbox.server import main as sim_main

        return sim_main(arguments[1:])
    parser = build_parser()
    args = parser.parse_args(arguments)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return int(handler(args) or 0)


def _report(exc: BaseException) -> int:
    """Tell the person about ``exc`` in one line (the traceback too with FLEXUS_DEBUG=1); its exit code."""
    code, line = failure(exc)
    if _debug():
        import traceback

        with contextlib.suppress(Exception):
            traceback.print_exception(exc, file=sys.stderr)
    _say(line)
    return code


def _on_sigterm(_signum: int, _frame: Any) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Every command runs through here, so every failure ends the same way: one line, one exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    previous: Any = None
    if threading.current_thread() is threading.main_thread():
        # Servers install their own handlers on top; everything else unwinds on SIGTERM like on Ctrl-C.
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = _dispatch(arguments)
        sys.stdout.flush()  # a reader that went away (`| head`) shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader closed stdout: stop quietly. Point stdout at /dev/null so the interpreter's final
        # flush of what is still buffered cannot fail again ("Exception ignored ... BrokenPipeError").
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_SIGPIPE
    except Terminated:
        _say("terminated")
        return EXIT_SIGTERM
    except KeyboardInterrupt:
        _say("interrupted")
        return EXIT_SIGINT
    except Exception as exc:  # the last resort: whatever it was, one line and a meaningful code
        return _report(exc)
    finally:
        if previous is not None:  # called in-process (tests, embedding): leave the caller's handler as it was
            signal.signal(signal.SIGTERM, previous)


def run() -> None:
    """The ``flexus-ops`` command. A store call stuck on a database that stopped answering is given up on
    by its caller (the store's own timeouts), but the thread it runs on cannot be interrupted; the
    interpreter would wait for it forever at exit. So once the command has said its one line, the
    process ends with its exit code instead of waiting for such a thread."""
    code = main()
    stuck = [t for t in threading.enumerate() if t.name.startswith("flexus-store") and t.is_alive()]
    for thread in stuck:
        thread.join(timeout=0.5)
    if any(thread.is_alive() for thread in stuck):
        _exit_now(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
