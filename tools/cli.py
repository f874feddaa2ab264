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
from typing import TYPE_CHECKING, Any, NoReturn

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
    # Request URLs are noise on a terminal and stdout belongs to MCP; warnings still show. At --log-level
    # debug these would log bodies (SSE chunks, frames), so they stay at WARNING whatever the level.
    for name in ("httpx", "httpcore", "httpx2", "mcp", "uvicorn.access", "sse_starlette", "aiohttp", "websockets"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _serve_logging(args: argparse.Namespace) -> None:
    """A long-running command's log: --log-level/--log-format, else FLEXUS_LOG_LEVEL/FLEXUS_LOG_FORMAT, on
    stderr; then tracing, only when asked for (its imports stay off the start-up path otherwise)."""
    from .config import Settings
    from .core.telemetry import configure_logging

    settings = Settings.load()
    configure_logging(args.log_level or settings.log_level, args.log_format or settings.log_format)
    _quiet_libraries()
    from .observability import otel_requested

    if otel_requested():
        from .observability import setup_otel

        setup_otel()


def _log_arguments(command: argparse.ArgumentParser) -> None:
    from .core.telemetry import LOG_FORMATS, LOG_LEVELS

    command.add_argument(
        "--log-level", type=str.lower, choices=LOG_LEVELS, help="default: $FLEXUS_LOG_LEVEL, else info"
    )
    command.add_argument(
        "--log-format",
        type=str.lower,
        choices=LOG_FORMATS,
        help="text, or json: one object per line (default: $FLEXUS_LOG_FORMAT, else text)",
    )


def _registry(read_only: bool = False, *, keep_sandbox: bool = False) -> Registry:
    """The registry the environment configures. ``keep_sandbox``: the embedded sandbox's state is kept in
    the state dir between CLI calls, so a job started by one call can be shown by the next."""
    from .config import Settings
    from .registry.registry import Registry, make_client

    settings = Settings.load()
    client = make_client(settings, keep_sandbox=True) if keep_sandbox and settings.uses_sandbox else None
    return Registry.from_settings(settings, read_only=read_only, client=client)


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
        registry = registry_for() if registry_for is not None else _registry(read_only, keep_sandbox=True)
        _mark_sandbox(registry, kept=registry_for is None)
        terminated = _stop_on_sigterm(registry, asyncio.current_task())
        try:
            code = await body(registry)
        except BaseException as exc:
            # Best effort: a store that just failed may fail to close too, and must not hide the first error.
            with contextlib.suppress(Exception):
                await registry.aclose()
            if terminated.is_set() and isinstance(exc, asyncio.CancelledError):
                raise Terminated from None
            raise
        finally:
            _restore_sigterm()
        await registry.aclose()
        if terminated.is_set():
            raise Terminated  # the result is printed; the process still ends as a terminated one (143)
        return code

    return asyncio.run(main())


def _stop_on_sigterm(registry: Registry, task: asyncio.Task[Any] | None) -> asyncio.Event:
    """SIGTERM during a command. A rollout this process owns is told to send no further wave: it records
    where it stopped, and the command prints that result before exiting 143 (a second SIGTERM cuts it
    short, leaving the rollout to the settler). Anything else is cancelled at once, unwinding every
    ``finally``, as before."""
    terminated = asyncio.Event()

    def on_sigterm() -> None:
        if not terminated.is_set() and registry.start_draining():
            _say("terminated: no further wave is sent; recording where the rollout stopped")
        elif task is not None:
            task.cancel()
        terminated.set()

    with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # not the main thread: as before
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
    return terminated


def _restore_sigterm() -> None:
    """Back to raising ``Terminated`` (the loop's handler would otherwise leave the default: die at once)."""
    with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
        asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _output_format(args: argparse.Namespace) -> str:
    """``--output``, else what gh and aws do: a table for a person at a terminal, JSON for a pipe or file."""
    chosen: str | None = getattr(args, "output", None)
    return chosen or ("table" if sys.stdout.isatty() else "json")


def _emit(args: argparse.Namespace, data: Any, table: Callable[[], str]) -> None:
    """Print a command's data on stdout in the chosen format; human notes go to stderr elsewhere."""
    if _output_format(args) == "json":
        _print_json(data)
    else:
        print(table())


def _mark_sandbox(registry: Registry, *, kept: bool) -> None:
    """Whoever reads stderr knows at once that no real server was touched (stdout stays data only)."""
    if not registry.is_sandbox:
        return
    where = ""
    if kept:
        from .registry.registry import sandbox_state_path

        where = f"; its state is kept in {sandbox_state_path(registry.settings)}"
    _say(f"{registry.describe_target()}, region {registry.settings.region}{where}")


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
    if args.transport == "stdio":
        return _serve_stdio(*_prepare_stdio(args))
    _serve_logging(args)
    from .core.telemetry import log_format
    from .mcp_server import banner
    from .serving import announce_start

    registry = _registry(args.read_only)
    import uvicorn

    from .core.errors import ConfigurationError, InvalidInput
    from .core.sockets import IDLE_KEEP_ALIVE_SECONDS, listening_socket
    from .mcp_http import MCP_PATH, http_app, needs_session_token, new_session_token, public_base_url
    from .serving import Drain, DrainingServer

    session_token = new_session_token() if needs_session_token(registry) else None
    drain = Drain(on_drain=[registry.start_draining])
    sock = listening_socket(args.host, args.port)
    port = sock.getsockname()[1]  # the one the system gave, with --port 0
    try:
        app = http_app(
            registry,
            args.host,
            port,
            args.allowed_origin or None,
            session_token=session_token,
            drain=drain,
            public_url=args.public_url,
            allowed_hosts=args.allowed_host,
        )
    except ConfigurationError as exc:  # --public-url or --allowed-host of the wrong shape
        sock.close()
        raise InvalidInput(str(exc).split(":", 1)[0], str(exc).split(": ", 1)[-1]) from None
    except ValueError as exc:
        sock.close()
        raise InvalidInput("--host", str(exc)) from None
    url = public_base_url(registry, args.host, port, args.public_url) + MCP_PATH
    announce_start(registry, "mcp", "http", url)
    if log_format() == "text":
        banner(registry, "streamable HTTP", url)
    token_path = None
    if session_token is not None:
        token_path = _hand_over_session_token(session_token, url, args.token_file, registry.settings.state_dir)
    # log_config=None: uvicorn's records go through this process's handler (text or JSON), not its own.
    config = uvicorn.Config(
        app, host=args.host, port=port, log_level="warning", log_config=None, timeout_keep_alive=IDLE_KEEP_ALIVE_SECONDS
    )
    server = DrainingServer(config, drain, args.grace_seconds)

    async def serve() -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit:
            if server.started:
                raise
            # uvicorn has logged why and exits 3; say it our way.
            raise ConfigurationError(f"cannot serve on {args.host}:{port}; choose another --port") from None
        finally:
            if token_path is not None:
                token_path.unlink(missing_ok=True)  # the session token dies with this server
            with contextlib.suppress(Exception):
                await registry.aclose()  # signs the audit checkpoint for what this process appended

    asyncio.run(serve())
    return server.exit_code


def _prepare_stdio(args: argparse.Namespace) -> tuple[Registry, Any]:
    """Everything ``flexus-ops mcp`` does over stdio before it serves: the log, the registry, the start-up
    line, the banner on a terminal, the server."""
    _serve_logging(args)
    from .core.telemetry import log_format
    from .mcp_server import banner, build_server
    from .serving import announce_start

    registry = _registry(args.read_only)
    announce_start(registry, "mcp", "stdio", "stdin/stdout")
    if log_format() == "text":
        banner(registry, "stdio", "stdin/stdout")
    return registry, build_server(registry)


def prepare_stdio_mcp(arguments: list[str]) -> tuple[Registry, Any]:
    """``_prepare_stdio`` for the command line ``arguments`` (the launcher's fast path runs this on a thread
    while it answers the handshake; it took that path only for arguments that parse)."""
    args = build_parser().parse_args(arguments)
    region: str | None = getattr(args, "region", None)
    if region is not None:
        os.environ["FLEXUS_REGION"] = region  # --region for the whole process, as _region_override does for a command
    return _prepare_stdio(args)


def serve_handed_over(registry: Registry, server: Any, serve: Callable[[], Awaitable[None]]) -> NoReturn:
    """The fast path's end: serve the stream it handed over, then exit as ``flexus-ops mcp`` exits."""
    _finish(_guarded(lambda: _serve_stdio(registry, server, transport=serve)))


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


def _serve_stdio(registry: Registry, server: Any, transport: Callable[[], Awaitable[None]] | None = None) -> int:
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
        serving = asyncio.ensure_future((transport or server.run_stdio_async)())
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
        # A log record, so a JSON log stays one object per line; the path only, never the token.
        logging.getLogger("flexus_ops.mcp").info(
            "MCP session token for this server written to %s (mode 0600)", path, extra={"token_file": str(path)}
        )
        return path
    print(
        f"  session token (shown once; it stands for you, {_caller().principal}):\n    {token}\n"
        f'  client config: {{"url": "{url}", "headers": {{"Authorization": "Bearer {token}"}}}}',
        file=sys.stderr,
    )
    return None


# -- slack ----------------------------------------------------------------------------------------


def cmd_slack(args: argparse.Namespace) -> int:
    _serve_logging(args)
    from .bots.slack.app import main as run_slack  # bolt and aiohttp load only for this command

    return run_slack(
        host=args.host,
        port=args.port,
        mode=args.mode,
        read_only=args.read_only,
        grace_seconds=args.grace_seconds,
        health_port=args.health_port,
    )


# -- tools ----------------------------------------------------------------------------------------


def cmd_tools(args: argparse.Namespace) -> int:
    from .core.errors import InvalidInput

    if args.action != "show" and args.name is not None:
        raise InvalidInput("NAME", f"only `tools show` takes a tool name, not `tools {args.action}`")
    if args.action != "export" and args.to is not None:
        raise InvalidInput("--to", "only `tools export` writes to a file")
    if args.action == "export" and args.output == "table":
        raise InvalidInput("--output", "`tools export` writes the catalog as JSON only (`tools` lists it as a table)")
    registry = _registry()
    if args.action == "export":
        from .mcp_server import tool_catalog

        text = json.dumps(tool_catalog(registry), indent=2, ensure_ascii=False) + "\n"
        if args.to is None:
            sys.stdout.write(text)
        else:
            Path(args.to).write_text(text, encoding="utf-8")
            _say(f"wrote {args.to}")
        return EXIT_OK
    _mark_sandbox(registry, kept=False)
    if args.action == "show":
        return _show_tool(args, registry)
    rows = [
        {
            "name": spec.name,
            "title": spec.title,
            "safety": spec.safety.value,
            "needs_approval": registry.policy.needs_approval(spec.name),
        }
        for spec in registry.tools()
    ]

    def table() -> str:
        lines = [f"{'tool':32} {'safety':12} {'approval':9} title"]
        for row in rows:
            lines.append(
                f"{row['name']:32} {row['safety']:12} {'yes' if row['needs_approval'] else '':9} {row['title']}"
            )
        return "\n".join(lines)

    _emit(args, rows, table)
    return EXIT_OK


def _show_tool(args: argparse.Namespace, registry: Registry) -> int:
    from .core.errors import InvalidInput
    from .mcp_server import tool_catalog

    if args.name is None:
        raise InvalidInput("NAME", "`tools show` needs a tool name, e.g. flexus_stop_servers (`flexus-ops tools`)")
    if args.name not in registry.specs:
        raise InvalidInput("NAME", f"no tool named {args.name[:100]!r}: `flexus-ops tools` lists them")
    spec = registry.spec(args.name)  # one the policy or read-only mode disables is refused, as a call would be
    (entry,) = [tool for tool in tool_catalog(registry) if tool["name"] == spec.name]
    shown = {**entry, "safety": spec.safety.value, "needs_approval": registry.policy.needs_approval(spec.name)}
    _emit(args, shown, lambda: _tool_text(shown))
    return EXIT_OK


def _schema_type(schema: dict[str, Any]) -> str:
    """A JSON schema's type in a few words: ``array of string``, ``SOFT|HARD``, ``integer or null``."""
    if "enum" in schema:
        return "|".join(str(value) for value in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    for combined in ("anyOf", "oneOf"):
        if combined in schema:
            return " or ".join(_schema_type(part) for part in schema[combined])
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_schema_type(schema.get('items', {}))}"
    return "|".join(kind) if isinstance(kind, list) else str(kind)


def _tool_text(tool: dict[str, Any]) -> str:
    schema = tool.get("inputSchema") or {}
    required = set(schema.get("required", []))
    hints = ", ".join(f"{key}={json.dumps(value)}" for key, value in tool.get("annotations", {}).items())
    lines = [
        f"{tool['name']}: {tool.get('title') or ''}",
        f"  safety: {tool['safety']}; second person's approval: {'yes' if tool['needs_approval'] else 'no'}",
        f"  annotations: {hints or '-'}",
        "",
        *[f"  {line}" for line in (tool.get("description") or "").splitlines()],
        "",
        "  arguments:",
    ]
    properties: dict[str, Any] = schema.get("properties", {})
    if not properties:
        lines.append("    (none)")
    for name, prop in properties.items():
        need = "required" if name in required else f"default {json.dumps(prop['default'])}" if "default" in prop else ""
        lines.append(f"    {name}: {_schema_type(prop)}{f' ({need})' if need else ''}")
        if prop.get("description"):
            lines.append(f"        {' '.join(str(prop['description']).split())}")
    return "\n".join(lines)


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
    from .cloud import rules
    from .core.errors import InvalidInput

    first = getpass.getpass(f"{field}: ")
    if getpass.getpass(f"{field} (again): ") != first:
        raise InvalidInput(field, "the two entries differ")
    # The rules every image shares, before anything is sent; the preview adds each server's OS rules.
    if field == "new_password" and (problem := rules.problem_with_password_format(first)):
        raise InvalidInput(field, problem)
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
        if _output_format(args) == "table":
            print(render(output))
            return EXIT_OK
        if sys.stderr.isatty():  # JSON for a program, the same in words for the person watching
            print(render(output), file=sys.stderr)
        _print_json(output.model_dump(mode="json", exclude_none=True))
        return EXIT_OK

    return _run(body)


# -- approvals ------------------------------------------------------------------------------------


def _printable(value: object) -> str:
    """A value for a table on a terminal: control characters (escape sequences, newlines, bells) shown as
    escapes, so text someone else typed (a request's reason) cannot clear, recolour or forge lines of it."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


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

            def table() -> str:
                if not pending:
                    return "no approval requests are waiting"
                lines = []
                for row in pending:
                    mine = " (yours)" if row["yours"] else ""
                    until = _when(row["expires_at"])
                    by = _printable(row["requested_by"])
                    lines.append(f"{row['action_id']}  {row['tool']}  by {by}{mine}  until {until}")
                    lines.append(f"    reason: {_printable(row['reason'])}")
                    lines.append(f"    arguments: {_printable(row['arguments'])}")
                return "\n".join(lines)

            _emit(args, pending, table)
            return EXIT_OK
        if args.action == "approve":
            # An approved rollout runs in this process: it waits to the end, showing each wave.
            result = await registry.approve(
                caller, args.action_id, args.note, progress=ProgressBar(), wait=True, wait_seconds=math.inf
            )
            _emit(args, result.model_dump(mode="json", exclude_none=True), lambda: result_text(result))
            return EXIT_OK
        if args.action == "reject":
            await registry.reject(caller, args.action_id, args.note)
            _emit(args, {"action_id": args.action_id, "state": "rejected"}, lambda: f"{args.action_id}: rejected")
            return EXIT_OK
        if not sys.stdout.isatty() and not args.force:
            print("refusing to print a password to a pipe or file; run on a terminal (or --force)", file=sys.stderr)
            return EXIT_REFUSED
        secret = await registry.reveal(caller, args.action_id)
        print(f"generated password (shown once, now erased): {secret}")
        return EXIT_OK

    return _run(body)


# -- audit ----------------------------------------------------------------------------------------


async def _verify_audit(args: argparse.Namespace, registry: Registry) -> int:
    import dataclasses

    files = [Path(name) for name in args.checkpoints] if args.checkpoints else None
    missing = [str(path) for path in files or [] if not path.is_file()]
    if missing:
        from .core.errors import InvalidInput

        raise InvalidInput("--checkpoints", f"no such checkpoint file: {', '.join(missing)}")
    report = await registry.records.audit_report(files)  # never waits for settling
    # Its own meaning for 1 and 2 (README): tampered, or not fully verified.
    code = EXIT_REFUSED if report.problems else EXIT_USAGE if report.unverifiable else EXIT_OK
    _emit(args, {**dataclasses.asdict(report), "intact": report.intact}, lambda: _audit_report_text(report))
    return code


def _audit_report_text(report: Any) -> str:
    # Problems quote what the database holds (a key id, a file name): shown with control characters escaped.
    if report.problems:
        lines = [f"audit log TAMPERED ({len(report.problems)} problem(s)):"]
        lines += [f"  - {_printable(problem)}" for problem in report.problems + report.unverifiable]
        return "\n".join(lines)
    if report.keyed_from is None:
        keyed = "no keyed records yet" if report.records else "empty"
    elif report.legacy_records:
        keyed = f"records 1-{report.legacy_records} legacy SHA-256, keyed (HMAC-SHA256) from record {report.keyed_from}"
    else:
        keyed = f"keyed (HMAC-SHA256) from record {report.keyed_from}"
    keys = f", key(s) {_printable(', '.join(report.key_ids))}" if report.key_ids else ""
    where = _printable(", ".join(report.checkpoint_files)) or "no checkpoint file"
    checked = f"{report.checkpoints_checked} signed checkpoint(s) checked ({where})"
    if report.unverifiable:
        lines = [f"audit log NOT FULLY VERIFIED: {report.records} record(s), {keyed}{keys}; {checked}"]
        lines += [f"  - {_printable(gap)}" for gap in report.unverifiable]
        return "\n".join(lines)
    lines = [f"audit log intact: {report.records} record(s), {keyed}{keys}; {checked}"]
    if report.keyed_from is not None and report.keyed_recorded:
        lines.append(f"  keyed from the record this state dir saw it keyed from ({_printable(report.keyed_recorded)})")
    if report.keyed_from is None and report.records:
        # A log rewritten whole into unkeyed records needs no key: only a record of it being keyed tells.
        lines.append(
            "  note: no keyed records, and this state dir never saw this log keyed: a log rewritten without "
            "the audit key into unkeyed records would look the same (a state dir that wrote to it keyed, or its "
            "checkpoints, would tell)"
        )
    if not report.checkpoints_checked and report.records:
        # Without a checkpoint, deleting the newest records and moving the head back goes unnoticed.
        lines.append("  note: no checkpoints were checked, so truncation of the newest records cannot be ruled out")
    return "\n".join(lines)


def _audit_line(record: Any) -> str:
    """One record as a table row. Every text comes from the database, where anyone who can write it may
    have put escape sequences: all of it is shown escaped."""
    detail = record.detail
    summary = detail.get("plan") or detail.get("outcome") or detail.get("difference") or detail.get("note") or ""
    jobs = f" jobs={','.join(map(str, detail['job_ids']))}" if detail.get("job_ids") else ""
    event, person, surface, tool = (
        _printable(value or "-") for value in (record.event, record.person, record.surface, record.tool)
    )
    shown = _printable(f"{summary}{jobs}")
    return f"{record.seq:5} {_when(record.at)} {event:18} {person:12} {surface:9} {tool:30} {shown}"


def cmd_audit(args: argparse.Namespace) -> int:
    async def body(registry: Registry) -> int:
        if args.action == "verify":
            registry.person(_caller())  # only someone the policy names checks the chain
            return await _verify_audit(args, registry)
        records = await registry.audit(_caller(), args.limit)

        def table() -> str:
            lines = [_audit_line(record) for record in records]
            return "\n".join(lines) if lines else "the audit log is empty"

        _emit(args, [record.__dict__ for record in records], table)
        return EXIT_OK

    return _run(body)


# -- token ----------------------------------------------------------------------------------------


def cmd_token(args: argparse.Namespace) -> int:
    import secrets

    from .gate.policy import token_principal

    token = "fxt_" + secrets.token_urlsafe(32)
    principal = token_principal(token)
    _emit(
        args,
        {"person": args.person, "token": token, "principal": principal},
        lambda: (
            f"bearer token for {args.person} (shown once; give it to their MCP client):\n  {token}\n\n"
            f'add this principal to their entry in the policy file:\n  principals = ["{principal}"]'
        ),
    )
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from .demo import cmd_demo  # the tour's own module: loaded only when asked for

    return cmd_demo(args)


# -- completion -----------------------------------------------------------------------------------

TOOL_NAME = "flexus-tool"
"""An argument whose value is a tool name: ``completion`` lists the catalog's names for it."""


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def walk_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[str, argparse.ArgumentParser]]:
    """Every parser under ``parser`` (itself first), with its command path, e.g. ``approvals list``."""
    found = [(" ".join(path), parser)]
    for name, sub in _subcommands(parser).items():
        found += walk_parsers(sub, (*path, name))
    return found


def full_parser() -> argparse.ArgumentParser:
    """The parser with ``sim``'s own options in it (``main`` hands ``sim`` to the sandbox's parser)."""
    from .sandbox.server import add_arguments

    parser = build_parser()
    add_arguments(_subcommands(parser)["sim"])
    return parser


def cmd_completion(args: argparse.Namespace) -> int:
    import shtab

    from .registry.catalog import TOOLS

    # The names are written into the script: completing costs the shell nothing, and it never starts
    # Python. A new tool needs the script made again (README, "Shell completion").
    words = " ".join(sorted(spec.name for spec in TOOLS))
    tool_names = {
        "bash": "_flexus_ops_tool_names",
        "zsh": f"({words})",
        "tcsh": f"({words})",
        "preamble": {"bash": f'_flexus_ops_tool_names() {{\n  compgen -W "{words}" -- "$1"\n}}\n'},
    }
    parser = full_parser()
    for _path, sub in walk_parsers(parser):
        for action in sub._actions:
            if getattr(action, "complete", None) == TOOL_NAME:
                action.complete = tool_names  # type: ignore[attr-defined]
    sys.stdout.write(shtab.complete(parser, shell=args.shell))
    return EXIT_OK


# -- parser ---------------------------------------------------------------------------------------


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help (unless there is none, or the help already says it), and the
    examples laid out as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if default is None or default is False or default == argparse.SUPPRESS or "default" in text:
            return text
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text
        return f"{text} (default: %(default)s)"


def _examples(*lines: str) -> str:
    return "Examples:\n" + "\n".join(f"  {line}" for line in lines)


def _command(commands: Any, name: str, help_text: str, *examples: str, **options: Any) -> argparse.ArgumentParser:
    """A subcommand with its help as description, its examples as epilog, and defaults shown."""
    return commands.add_parser(  # type: ignore[no-any-return]
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        epilog=_examples(*examples),
        formatter_class=HelpFormatter,
        **options,
    )


def _region_type(value: str) -> str:
    from .config import REGION_PATTERN  # the setting's own rule (FLEXUS_REGION)

    if not REGION_PATTERN.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value[:100]!r} is not a region name like 'cn-north-4' (lower-case letters, digits and dashes: "
            "^[a-z]{2}(-[a-z0-9]+)+$)"
        )
    return value


def _region_option(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    # Accepted before the command and after it; SUPPRESS keeps a subcommand from resetting the global one.
    parser.add_argument(
        "--region",
        type=_region_type,
        default=None if top else argparse.SUPPRESS,
        help="the Huawei Cloud region for this call, e.g. ap-southeast-1 (default: FLEXUS_REGION, else cn-north-4)",
    )


def _output_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=["json", "table"],
        help="json, or table (human text) (default: table on a terminal, json when stdout is a pipe or file)",
    )


SIM_EXAMPLES = _examples(
    "flexus-ops sim --port 9090",
    "flexus-ops sim --servers 1000 --seed 7 --job-seconds 1 --latency-ms 30",
    "FLEXUS_ECS_ENDPOINT=http://127.0.0.1:9090 HUAWEICLOUD_SDK_AK=FLEXUSSANDBOXAK000000 \\",
    "  HUAWEICLOUD_SDK_SK=flexus-sandbox-sk-not-a-real-secret flexus-ops call flexus_list_servers",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flexus-ops",
        description="Operate Huawei Cloud Flexus L instances safely. With no credentials configured,\n"
        "everything runs against the embedded sandbox cloud.",
        epilog=_examples(
            "flexus-ops tools",
            'flexus-ops call flexus_list_servers --args \'{"status": "ACTIVE"}\' --output table',
            "flexus-ops --region ap-southeast-1 call flexus_list_servers | jq '.servers[].name'",
            "flexus-ops completion bash > ~/.local/share/bash-completion/completions/flexus-ops",
        )
        + "\n\nExit codes: 0 done, 1 refused, 2 bad input, 3 cloud or network, 4 store or configuration, "
        "5 outcome unknown, 70 bug (README.md, The CLI).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"flexus-ops {__version__}")
    _region_option(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    mcp = _command(
        commands,
        "mcp",
        "run the MCP server (stdio by default)",
        "flexus-ops mcp",
        "flexus-ops mcp --read-only",
        "flexus-ops mcp --transport http --port 8765 --token-file ~/.flexus-mcp.token",
    )
    mcp.add_argument("--transport", choices=["stdio", "http"], default="stdio", help="how MCP clients connect")
    mcp.add_argument("--host", default="127.0.0.1", help="HTTP: address to listen on")
    mcp.add_argument("--port", type=int, default=8765, help="HTTP: port to listen on")
    mcp.add_argument("--read-only", action="store_true", help="offer only tools that change nothing")
    mcp.add_argument("--allowed-origin", action="append", help="browser origin allowed to call (repeatable)")
    mcp.add_argument(
        "--public-url",
        metavar="URL",
        help="HTTP: the base URL clients use, e.g. https://flexus.example.com (default: FLEXUS_PUBLIC_URL, else "
        "http://HOST:PORT); its host is accepted in the Host header, and OAuth metadata and audience derive from it",
    )
    mcp.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="HTTP: another Host header value to accept, e.g. flexus.internal behind a load balancer (repeatable; "
        "default: FLEXUS_ALLOWED_HOSTS, comma-separated)",
    )
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
    _log_arguments(mcp)
    _region_option(mcp)
    mcp.set_defaults(handler=cmd_mcp)

    slack = _command(
        commands,
        "slack",
        "run the Slack bot: Socket Mode if SLACK_APP_TOKEN is set, else HTTP at /slack/events",
        "SLACK_BOT_TOKEN=xoxb-... SLACK_APP_TOKEN=xapp-... flexus-ops slack",
        "SLACK_BOT_TOKEN=xoxb-... SLACK_SIGNING_SECRET=... flexus-ops slack --mode http --port 3000",
    )
    slack.add_argument("--host", default="127.0.0.1", help="HTTP mode: address to listen on")
    slack.add_argument("--port", type=int, default=3000, help="HTTP mode: port to listen on")
    slack.add_argument(
        "--mode", choices=["auto", "socket", "http"], default="auto", help="auto: socket if SLACK_APP_TOKEN is set"
    )
    slack.add_argument("--read-only", action="store_true", help="offer only tools that change nothing")
    slack.add_argument(
        "--grace-seconds",
        type=float,
        default=10.0,
        help="HTTP mode, on SIGTERM/SIGINT: how long events in flight may finish",
    )
    slack.add_argument(
        "--health-port",
        type=int,
        help="Socket Mode: serve /healthz, /readyz and /metrics on this port (on --host); HTTP mode serves them "
        "on --port",
    )
    _log_arguments(slack)
    _region_option(slack)
    slack.set_defaults(handler=cmd_slack)

    # Listed for --help only: `main` hands `sim` to the sandbox's own parser, so other commands never
    # import the sandbox (a third of a second at every start of `flexus-ops mcp`).
    commands.add_parser(
        "sim",
        help="run the sandbox cloud (ECS + IAM simulator) as an HTTP server",
        add_help=False,
        epilog=SIM_EXAMPLES,
        formatter_class=HelpFormatter,
    )

    tools = _command(
        commands,
        "tools",
        "the tool catalog: list it, show one tool's arguments, or export it as JSON",
        "flexus-ops tools",
        "flexus-ops tools show flexus_stop_servers",
        "flexus-ops tools --output json | jq -r '.[].name'",
        "flexus-ops tools export --to manifests/tools.json",
    )
    tools.add_argument(
        "action", nargs="?", choices=["list", "show", "export"], default="list", help="what to do with the catalog"
    )
    tools.add_argument("name", nargs="?", metavar="NAME", help="show: the tool").complete = TOOL_NAME  # type: ignore[attr-defined]
    tools.add_argument(
        "--to", metavar="FILE", help="export: write the catalog to FILE (default: stdout)"
    ).complete = "file"  # type: ignore[attr-defined]
    _output_option(tools)
    _region_option(tools)
    tools.set_defaults(handler=cmd_tools)

    call = _command(
        commands,
        "call",
        "call a tool (changes are previewed, then confirmed)",
        'flexus-ops call flexus_list_servers --args \'{"status": "ACTIVE"}\' --output table',
        'flexus-ops call flexus_stop_servers --args \'{"servers": ["web-01"]}\'          # a terminal asks y/N',
        'flexus-ops call flexus_stop_servers --args \'{"servers": ["web-01"]}\' --confirm fxc1...',
        'flexus-ops call flexus_show_job --args \'{"job_id": "..."}\'',
        'flexus-ops call flexus_reset_servers_password --args \'{"servers": ["web-01"], "reason": "rotate"}\' '
        "--prompt-secret",
    )
    call.add_argument(
        "tool", metavar="TOOL", help="the tool's name (`flexus-ops tools` lists them)"
    ).complete = TOOL_NAME  # type: ignore[attr-defined]
    call.add_argument("--args", default="{}", help="the arguments as a JSON object (`flexus-ops tools show TOOL`)")
    call.add_argument("--confirm", metavar="TOKEN", help="the confirmation token from a preview")
    call.add_argument("--prompt-secret", action="store_true", help="ask for secret arguments (a password) privately")
    _output_option(call)
    _region_option(call)
    call.set_defaults(handler=cmd_call)

    approvals = _command(
        commands,
        "approvals",
        "approval requests: list, approve, reject, reveal",
        "flexus-ops approvals list",
        'flexus-ops approvals approve ID --note "checked with the owner"',
    )
    approval_actions = approvals.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = _command(
        approval_actions,
        "list",
        "the approval requests waiting, yours marked",
        "flexus-ops approvals list",
        "flexus-ops approvals list --output json | jq -r '.[].action_id'",
    )
    _output_option(listing)
    _region_option(listing)
    for verb, what in (
        ("approve", "approve a request (by someone other than its requester); it runs at once"),
        ("reject", "reject a request; nothing runs"),
    ):
        sub = _command(approval_actions, verb, what, f'flexus-ops approvals {verb} ID --note "why"')
        sub.add_argument("action_id", metavar="ID", help="the request's action id (`flexus-ops approvals list`)")
        sub.add_argument("--note", help="why, for the audit log")
        _output_option(sub)
        _region_option(sub)
    reveal = _command(
        approval_actions,
        "reveal",
        "show a generated password once (requester only)",
        "flexus-ops approvals reveal ID",
    )
    reveal.add_argument("action_id", metavar="ID", help="the approved request's action id")
    reveal.add_argument("--force", action="store_true", help="print even when stdout is not a terminal")
    approvals.set_defaults(handler=cmd_approvals)

    audit = _command(
        commands,
        "audit",
        "show the audit log, or verify its keyed chain and checkpoints",
        "flexus-ops audit --limit 20",
        "flexus-ops audit --output json | jq '.[] | select(.event == \"executed\")'",
        "flexus-ops audit verify --checkpoints replica-*/audit-checkpoints.jsonl",
    )
    audit.add_argument("action", nargs="?", choices=["show", "verify"], default="show", help="what to do with the log")
    audit.add_argument("--limit", type=int, default=50, help="show: the newest N records")
    audit.add_argument(
        "--checkpoints",
        nargs="+",
        metavar="FILE",
        help="verify: checkpoint files or saved flexus_ops.audit logs to check the log against "
        "(default: the state dir's audit-checkpoints.jsonl)",
    ).complete = "file"  # type: ignore[attr-defined]
    _output_option(audit)
    _region_option(audit)
    audit.set_defaults(handler=cmd_audit)

    token = _command(
        commands,
        "token",
        "make a bearer token for the MCP HTTP transport",
        "flexus-ops token new --person alice",
        "flexus-ops token new --person alice --output json | jq -r .principal",
    )
    token.add_argument("action", choices=["new"], help="new: make one")
    token.add_argument("--person", required=True, help="whose token (their id in the policy file)")
    _output_option(token)
    token.set_defaults(handler=cmd_token)

    demo = _command(
        commands, "demo", "a guided tour on the sandbox cloud", "flexus-ops demo", "flexus-ops demo --job-seconds 0.5"
    )
    demo.add_argument("--job-seconds", type=float, default=2.0, help="how long the sandbox's jobs take")
    demo.set_defaults(handler=_demo)

    completion = _command(
        commands,
        "completion",
        "print a shell completion script (commands, options and tool names)",
        "flexus-ops completion bash > ~/.local/share/bash-completion/completions/flexus-ops",
        'flexus-ops completion zsh > "${fpath[1]}/_flexus-ops"',
        "flexus-ops completion tcsh > ~/.flexus-ops.tcsh   # then: source ~/.flexus-ops.tcsh",
    )
    completion.add_argument("shell", choices=["bash", "zsh", "tcsh"], help="the shell")
    completion.set_defaults(handler=cmd_completion)
    return parser


def _run_sim(arguments: list[str]) -> int:
    from .sandbox.server import main as sim_main

    return sim_main(arguments, formatter_class=HelpFormatter, epilog=SIM_EXAMPLES)


@contextlib.contextmanager
def _region_override(region: str | None) -> Any:
    """``--region`` stands for FLEXUS_REGION for this one call, whichever surface reads the settings."""
    if region is None:
        yield
        return
    before = os.environ.get("FLEXUS_REGION")
    os.environ["FLEXUS_REGION"] = region
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("FLEXUS_REGION", None)
        else:
            os.environ["FLEXUS_REGION"] = before


def _dispatch(arguments: list[str]) -> int:
    if arguments[:1] == ["sim"]:
        return _run_sim(arguments[1:])
    parser = build_parser()
    args, extra = parser.parse_known_args(arguments)
    region: str | None = getattr(args, "region", None)
    if args.command == "sim":  # global options came first: `flexus-ops --region X sim ...`
        rest = arguments[arguments.index("sim") + 1 :]
        return _run_sim(["--region", region, *rest] if region else rest)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    with _region_override(region):
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
    return _guarded(lambda: _dispatch(arguments))


def _guarded(body: Callable[[], int]) -> int:
    """Run a command's ``body``: every failure ends the same way, one line and one exit code."""
    previous: Any = None
    if threading.current_thread() is threading.main_thread():
        # Servers install their own handlers on top; everything else unwinds on SIGTERM like on Ctrl-C.
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = body()
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
    _finish(main())


def _finish(code: int) -> NoReturn:
    stuck = [t for t in threading.enumerate() if t.name.startswith("flexus-store") and t.is_alive()]
    for thread in stuck:
        thread.join(timeout=0.5)
    if any(thread.is_alive() for thread in stuck):
        _exit_now(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
