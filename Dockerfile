# flexus-ops: MCP over streamable HTTP by default; `docker run IMAGE slack` runs the Slack bot instead.
#
#   docker build -t flexus-ops .                       (EXTRAS: "all" by default, "" for MCP + CLI only)
#   docker run -p 127.0.0.1:8765:8765 -v flexus-state:/var/lib/flexus-ops flexus-ops
#
# The build steps live in deploy/image.sh, which tests/test_deploy.py runs the same way in a fresh
# virtual environment, then starts this ENTRYPOINT + CMD and probes /healthz like the HEALTHCHECK does.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY tools ./tools
COPY bots ./bots
COPY deploy/image.sh ./deploy/image.sh
RUN sh deploy/image.sh wheel /src /wheels

FROM python:${PYTHON_VERSION}-slim AS runtime
ARG EXTRAS=all
# The MCP registry proves an OCI image is this server by the first label; the others are the OCI standard's.
LABEL io.modelcontextprotocol.server.name="io.github.flexus-ops/flexus-ops" \
    org.opencontainers.image.title="flexus-ops" \
    org.opencontainers.image.version="0.1.0" \
    org.opencontainers.image.licenses="Apache-2.0" \
    org.opencontainers.image.source="https://github.com/flexus-ops/flexus-ops"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=builder /wheels /wheels
COPY deploy/image.sh /usr/local/lib/flexus-ops/image.sh
RUN sh /usr/local/lib/flexus-ops/image.sh install /wheels /opt/flexus-ops "$EXTRAS" \
    && rm -rf /wheels \
    && groupadd --system --gid 10001 flexus \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/flexus-ops --no-create-home \
        --shell /usr/sbin/nologin flexus \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/flexus-ops

ENV PATH=/opt/flexus-ops/bin:$PATH \
    FLEXUS_STATE_DIR=/var/lib/flexus-ops \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# State (SQLite store, keys, audit checkpoints, default policy) outlives the container.
VOLUME ["/var/lib/flexus-ops"]
USER 10001:10001
WORKDIR /var/lib/flexus-ops
EXPOSE 8765

# The slim image has no curl: Python asks /healthz (alive; /readyz also checks the store).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8765/healthz', timeout=4).status != 200)"]

ENTRYPOINT ["flexus-ops"]
# Listening on every interface needs token principals in the policy (flexus-ops token new); the server
# refuses to start without them. Behind a proxy add --public-url URL and --allowed-host NAME.
CMD ["mcp", "--transport", "http", "--host", "0.0.0.0", "--port", "8765"]
