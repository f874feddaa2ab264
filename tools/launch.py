"""The ``flexus-ops`` command's entry point. ``flexus-ops mcp`` over stdio, in a configuration the fast
path reproduces exactly (``mcp_fast.fast_config``), answers the handshake and ``tools/list`` at once from
the exported catalog while a thread builds the real server, then hands the stream over; every other
command, and every other configuration, goes straight to the CLI (``cli.run``), imported only then.

This module imports the stdlib only: a client waits for the first answer while it loads.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any, NoReturn


def _say_and_exit(line: str, code: int) -> NoReturn:
    # os.write, not print: this may run in a signal handler while another thread holds sys.stderr's lock.
    with contextlib.suppress(OSError):
        os.write(2, f"flexus-ops: {line}\n".encode())
    os._exit(code)


def run() -> None:
    # Until the CLI (or the fast path) takes the signals over, Ctrl-C says what the CLI says for one: loading
    # takes half a second, and an interrupt in it must not end in a traceback. Set here, not at import: a
    # module that only reads the command line (tests do) must leave its importer's signals alone.
    signal.signal(signal.SIGINT, lambda _n, _f: _say_and_exit("interrupted", 130))
    arguments = sys.argv[1:]
    read_only = stdio_mcp_read_only(arguments)
    if read_only is not None and not os.isatty(0):  # a person at a terminal gains nothing from it
        from .mcp_fast import fast_config

        config = fast_config(os.environ, read_only=read_only)
        if config is not None:
            _fast_start(arguments, config)
    from .cli import run as cli_run

    signal.signal(signal.SIGINT, signal.default_int_handler)  # the CLI's: Ctrl-C unwinds as KeyboardInterrupt
    cli_run()


def stdio_mcp_read_only(arguments: list[str]) -> bool | None:
    """For ``flexus-ops [--region R] mcp [--read-only] [--transport stdio] [--log-level L] [--log-format F]
    [--region R]`` (each value valid, as the parser would take it): whether it is read-only. None for
    anything else, even what the parser would take too (an abbreviation, an HTTP option): the CLI decides."""
    from .mcp_fast import LOG_FORMATS, LOG_LEVELS, REGION_PATTERN

    read_only, command = False, False
    tokens = iter(arguments)
    for token in tokens:
        name, equals, value = token.partition("=")
        if name in ("--region", "--log-level", "--log-format", "--transport") and not equals:
            value = next(tokens, "")
        if token == "mcp" and not command:  # noqa: S105 - the command, not a password
            command = True
        elif name == "--region":
            if not REGION_PATTERN.fullmatch(value):
                return None
        elif not command:
            return None
        elif token == "--read-only":  # noqa: S105 - an option, not a password
            read_only = True
        elif not (
            (name == "--log-level" and value.lower() in LOG_LEVELS)
            or (name == "--log-format" and value.lower() in LOG_FORMATS)
            or (name == "--transport" and value == "stdio")
        ):
            return None
    return read_only if command else None


def _claim_stdio() -> tuple[int, int]:
    """The wire on private descriptors; fd 0 on /dev/null and fd 1 on stderr, so nothing else in the process
    reads the client's bytes or writes into the protocol (what the SDK's stdio transport does while serving)."""
    import fcntl

    stdin_fd = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    stdout_fd = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return stdin_fd, stdout_fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fast_start(arguments: list[str], config: Any) -> NoReturn:
    from . import __version__
    from .mcp_fast import Handover, Handshake

    # Until the real server serves, a signal ends the process as it ends a starting `flexus-ops mcp`.
    signal.signal(signal.SIGINT, lambda _n, _f: _say_and_exit("interrupted", 130))
    signal.signal(signal.SIGTERM, lambda _n, _f: _say_and_exit("terminated", 143))
    stdin_fd, stdout_fd = _claim_stdio()
    handshake = Handshake(config, __version__)
    built: list[Any] = []
    ready = threading.Event()

    def build() -> None:
        try:
            from .cli import prepare_stdio_mcp

            built.extend(prepare_stdio_mcp(arguments))
        except BaseException as exc:  # what `flexus-ops mcp` would have said before serving, and its code
            from .cli import failure

            code, line = failure(exc)
            _say_and_exit(line, code)
        # What a first tool call loads (the cloud client, the embedded sandbox), while the client has nothing
        # to wait for. Before the hand-over, not beside it: with the GIL, imports beside the SDK's session
        # only slowed that first call (measured). Imports only: nothing is built, so nothing twice.
        import importlib

        for name in (".cloud.client", ".sandbox"):
            with contextlib.suppress(Exception):  # a call that needs it meets the same error, and reports it
                importlib.import_module(name, __package__)
        ready.set()

    threading.Thread(target=build, name="flexus-mcp-start", daemon=True).start()

    buffer = b""
    try:
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                chunk = os.read(stdin_fd, 1 << 16)
                if not chunk:
                    break  # the client closed stdin: the SDK sees the handshake, then the end, and ends as ever
                buffer += chunk
                continue
            reply = handshake.answer(buffer[:end])
            if reply is None:
                break  # the SDK's from here on, this line included
            buffer = buffer[end + 1 :]
            if reply:
                _write_all(stdout_fd, reply)
    except Exception as exc:  # a client that went away mid-write, say: one line and the code the CLI gives
        from .cli import failure

        code, line = failure(exc)
        _say_and_exit(line, code)

    ready.wait()
    registry, server = built
    from .cli import serve_handed_over
    from .mcp_fast import serve_stream

    handover = Handover(b"".join(handshake.replay) + buffer, handshake.replay_ids, stdin_fd, stdout_fd)
    import logging  # loaded by the start already

    logging.getLogger("flexus_ops.mcp").debug(
        "fast start: %d message(s) answered from the exported catalog, then handed to the SDK", handshake.answered
    )
    serve_handed_over(registry, server, lambda: serve_stream(server, handover))
