"""The ``flexus-ops`` command. Each subcommand imports what it needs only when it runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flexus-ops",
        description="Operate Huawei Cloud Flexus L instances safely. With no credentials configured, "
        "everything runs against the embedded sandbox cloud.",
    )
    parser.add_argument("--version", action="version", version=f"flexus-ops {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    sim = commands.add_parser("sim", help="run the sandbox cloud (ECS + IAM simulator) as an HTTP server")
    from .sandbox.server import add_arguments, run

    add_arguments(sim)
    sim.set_defaults(handler=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    return int(handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
