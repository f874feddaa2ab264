"""``flexus-ops sim``: serve the sandbox cloud over HTTP with uvicorn.

Binds to loopback unless ``--allow-remote`` is given: the admin routes (``/_sandbox/...``) are
unsigned, and the default credentials are published, so a sandbox must not be reachable from a
network by accident.
"""

from __future__ import annotations

import argparse
import sys

from ..config import Settings, is_loopback
from ..core.telemetry import LOG_FORMATS, LOG_LEVELS, configure_logging, emit, log_format
from .backend import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_IAM_DOMAIN,
    DEFAULT_IAM_PASSWORD,
    DEFAULT_IAM_USER,
    DEFAULT_PROJECT_ID,
    DEFAULT_REGION,
    DEFAULT_SECRET_KEY,
    Knobs,
    SandboxOptions,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="bind address (loopback unless --allow-remote)")
    parser.add_argument("--port", type=int, default=9090, help="TCP port (default 9090)")
    parser.add_argument(
        "--allow-remote", action="store_true", help="allow a non-loopback --host (admin routes are unsigned)"
    )
    parser.add_argument("--servers", type=int, default=30, help="fleet size (default 30)")
    parser.add_argument("--seed", type=int, default=7, help="fleet seed: the same seed gives the same fleet")
    parser.add_argument("--ak", default=DEFAULT_ACCESS_KEY, help="access key the sandbox accepts")
    parser.add_argument("--sk", default=DEFAULT_SECRET_KEY, help="secret key the sandbox accepts")
    parser.add_argument("--project-id", default=DEFAULT_PROJECT_ID, help="the sandbox's project id")
    parser.add_argument("--region", default=DEFAULT_REGION, help="region name (default cn-north-4)")
    parser.add_argument("--iam-domain", default=DEFAULT_IAM_DOMAIN, help="IAM account (domain) name")
    parser.add_argument("--iam-user", default=DEFAULT_IAM_USER, help="IAM user name")
    parser.add_argument("--iam-password", default=DEFAULT_IAM_PASSWORD, help="IAM user password")
    parser.add_argument("--security-token", default=None, help="require this X-Security-Token (temporary AK/SK)")
    parser.add_argument("--job-seconds", type=float, default=1.0, help="how long a power transition takes")
    parser.add_argument("--token-seconds", type=float, default=86_400, help="IAM token lifetime (default 24 h)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added latency per ECS/IAM request")
    parser.add_argument("--rate-limit", type=float, default=None, help="requests per second before 429")
    parser.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, help="default: $FLEXUS_LOG_LEVEL, else info")
    parser.add_argument(
        "--log-format",
        type=str.lower,
        choices=LOG_FORMATS,
        help="text or json (default: $FLEXUS_LOG_FORMAT, else text)",
    )


def _url(host: str, port: int) -> str:
    bare = host.strip("[]")
    shown = f"[{bare}]" if ":" in bare else bare
    return f"http://{shown}:{port}"


def run(args: argparse.Namespace) -> int:
    if not is_loopback(args.host) and not args.allow_remote:
        print(
            f"flexus-ops sim: refusing to bind {args.host}: the sandbox's admin routes are unsigned and its "
            "credentials are public. Use a loopback address, or pass --allow-remote on purpose.",
            file=sys.stderr,
        )
        return 2
    try:
        options = SandboxOptions(
            servers=args.servers,
            seed=args.seed,
            access_key=args.ak,
            secret_key=args.sk,
            project_id=args.project_id,
            region=args.region,
            iam_domain=args.iam_domain,
            iam_user=args.iam_user,
            iam_password=args.iam_password,
            job_seconds=args.job_seconds,
            token_seconds=args.token_seconds,
            security_token=args.security_token,
        )
        knobs = Knobs(
            latency_seconds=args.latency_ms / 1000.0,
            rate_limit_per_second=args.rate_limit,
            job_seconds=args.job_seconds,
        )
    except ValueError as error:
        print(f"flexus-ops sim: {error}", file=sys.stderr)
        return 2

    settings = Settings.load()
    configure_logging(args.log_level or settings.log_level, args.log_format or settings.log_format)
    import uvicorn  # lazily: importing the sandbox package must stay light

    from ..core.sockets import IDLE_KEEP_ALIVE_SECONDS, listening_socket
    from .responses import Sandbox

    sandbox = Sandbox(options)
    for name, value in knobs.model_dump().items():
        setattr(sandbox.knobs, name, value)
    sock = listening_socket(args.host.strip("[]"), args.port)
    url = _url(args.host, sock.getsockname()[1])  # the port the system gave, with --port 0
    # The published defaults are printed, as the quickest way in; a key or password someone chose
    # is theirs, and a log is no place for it.
    shown_sk = args.sk if args.sk == DEFAULT_SECRET_KEY else "<as given with --sk>"
    shown_password = args.iam_password if args.iam_password == DEFAULT_IAM_PASSWORD else "<as given>"
    emit(
        "started",
        message=f"flexus-ops sim (sandbox cloud) listening on {url}",
        surface="sim",
        mode="http",
        listen=url,
        target="sandbox",
        store="memory",
    )
    if log_format() == "text":  # a JSON log stays one object per line
        print(
            "\n".join(
                [
                    f"flexus-ops sim: sandbox cloud (NOT the real Huawei Cloud) on {url}",
                    f"  fleet: {args.servers} servers, seed {args.seed}, region {args.region}, "
                    f"jobs take {args.job_seconds:g}s",
                    f"  AK/SK: {args.ak} / {shown_sk}   project: {args.project_id}",
                    f"  IAM:   domain {args.iam_domain}, user {args.iam_user}, password {shown_password}",
                    f"  admin: {url}/_sandbox/health, /_sandbox/requests, /_sandbox/knobs",
                    "  to point flexus-ops or the official SDK at it:",
                    f"export FLEXUS_ECS_ENDPOINT={url} HUAWEICLOUD_SDK_AK={args.ak} "
                    f"HUAWEICLOUD_SDK_SK={shown_sk} HUAWEICLOUD_SDK_PROJECT_ID={args.project_id}",
                ]
            ),
            file=sys.stderr,
            flush=True,
        )
    config = uvicorn.Config(
        sandbox.app,
        host=args.host.strip("[]"),
        port=args.port,
        log_level="warning",
        log_config=None,  # uvicorn's records go through the handler above (text or JSON)
        access_log=False,
        lifespan="off",
        timeout_keep_alive=IDLE_KEEP_ALIVE_SECONDS,
    )
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    # uvicorn returns normally on Ctrl-C; it sets ``started`` only once it serves.
    return 0 if server.started else 1


def main(
    argv: list[str] | None = None,
    *,
    formatter_class: type[argparse.HelpFormatter] = argparse.HelpFormatter,
    epilog: str | None = None,
) -> int:
    parser = argparse.ArgumentParser(
        prog="flexus-ops sim",
        description="Run the sandbox cloud (ECS + IAM).",
        formatter_class=formatter_class,
        epilog=epilog,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
