#!/bin/sh
# The container image's build steps, kept in one place: the Dockerfile runs them, and
# tests/test_deploy.py runs the very same steps in a fresh virtual environment (these machines have no
# container engine), then starts the image's ENTRYPOINT + CMD from that environment.
#
#   image.sh wheel SOURCE_DIR WHEEL_DIR          build the flexus-ops wheel from a source tree
#   image.sh install WHEEL_DIR PREFIX [EXTRAS]   a virtual environment at PREFIX with that wheel and its
#                                                extras (comma-separated, e.g. "all" or "slack,postgres";
#                                                empty: the base install, MCP server and CLI only)
set -eu

python=${PYTHON:-python3}

case "${1:-}" in
wheel)
    [ $# -eq 3 ] || { echo "usage: $0 wheel SOURCE_DIR WHEEL_DIR" >&2; exit 2; }
    "$python" -m pip wheel --no-deps --wheel-dir "$3" "$2"
    ;;
install)
    [ $# -eq 3 ] || [ $# -eq 4 ] || { echo "usage: $0 install WHEEL_DIR PREFIX [EXTRAS]" >&2; exit 2; }
    set -- "$2" "$3" "${4:-}"
    wheel=$(ls "$1"/flexus_ops-*.whl)
    [ "$(printf '%s\n' "$wheel" | wc -l)" -eq 1 ] || { echo "$0: expected one flexus-ops wheel in $1" >&2; exit 1; }
    "$python" -m venv "$2"
    if [ -n "$3" ]; then
        "$2/bin/pip" install "flexus-ops[$3] @ file://$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")"
    else
        "$2/bin/pip" install "$wheel"
    fi
    # The installed command must run (a missing module or dependency fails the build, not the first start).
    "$2/bin/flexus-ops" --version
    ;;
*)
    echo "usage: $0 wheel SOURCE_DIR WHEEL_DIR | install WHEEL_DIR PREFIX [EXTRAS]" >&2
    exit 2
    ;;
esac
