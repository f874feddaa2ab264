"""The async ECS v1 client for every Flexus L operation.

Retry rules (reference 9.3): GETs retry on 429, 5xx and lost connections with jittered exponential
backoff; POST/PUT retry only on 429, which the gateway sends before processing anything; nothing
retries a 401 (five bad signatures lock the AK for five minutes). A write whose answer was lost
raises ``TransportError(may_have_applied=True)`` so the caller reconciles instead of re-sending.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from .. import __version__
from ..config import AuthMode, Settings
from ..core.errors import (
    CloudError,
    ConfigurationError,
    FlexusError,
    InvalidInput,
    JobTimeout,
    TransportError,
    bounded,
    input_error,
)
from . import rules
from .auth import AkSkAuth, IamTokenAuth
from .errors import error_from_response
from .models import (
    BatchSubmission,
    FailedChunk,
    Job,
    JobPoll,
    JobResult,
    ListServersQuery,
    ListServersResponse,
    PowerType,
    ResetPasswordRequest,
    ResetPasswordResult,
    SecurityOptions,
    ServerDetail,
    ServerRows,
    ServerSummaries,
    ServerSummary,
    SubmittedJob,
    UpdateServerRequest,
    UpdateServerResult,
)
from .retries import observe_request, observe_retry, operation_name, parse_retry_after, retry_listener
from .signer import canonical_query
from .transport import check_liveness_cheaply

if TYPE_CHECKING:
    from ..sandbox import Sandbox

GET_CONTENT_TYPE = "application/json"
WRITE_CONTENT_TYPE = "application/json;charset=utf-8"  # what the SDK sends, lowercased
SANDBOX_BASE_URL = "http://sandbox.flexus.invalid"
KEEPALIVE_EXPIRY_SECONDS = 5.0
"""How long an idle pooled connection is reused (httpx's default, stated). A server that closes idle
connections sooner, or as soon, races it: a request goes out on a connection the server is closing, and
comes back "Server disconnected without sending a response" (a read is retried after a backoff; a write's
outcome is unknown). Gateways keep idle connections far longer; ``flexus-ops sim`` does too."""

M = TypeVar("M", bound=BaseModel)
Page = TypeVar("Page", ListServersResponse, ServerRows, ServerSummaries)  # what one listing page parses into
ProgressCallback = Callable[[JobPoll], Awaitable[None] | None]
log = logging.getLogger("flexus_ops.cloud")


def validated(model: type[M], **data: Any) -> M:
    """Build a request model; a bad value is refused naming the field and the rule."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise input_error(exc, model, arguments_of="this request") from None


def _chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


class _NoCookies(httpx.Cookies):
    """The cloud's API sets no cookies and this client sends none."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _CookielessClient(httpx.AsyncClient):
    """httpx reads every response's Set-Cookie headers into the client's jar, building a urllib request per
    response to do it: about 15% of the client's CPU per call, for cookies the API never sets."""

    _no_cookies = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies


class FlexusClient:
    """One client per process and cloud target; it owns the shared connection pool."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        sandbox: Sandbox | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings or Settings()
        mode = self.settings.auth_mode
        self.sandbox = sandbox
        if mode is AuthMode.SANDBOX and sandbox is None:
            # Which cloud to talk to is decided once, where the application is put together
            # (flexus_ops.registry.registry.make_client); the client never builds a sandbox itself.
            raise ConfigurationError(
                "no cloud credentials are set and no sandbox was given: set HUAWEICLOUD_SDK_AK and "
                "HUAWEICLOUD_SDK_SK (or the IAM variables), or use make_client() for the embedded sandbox"
            )
        if self.sandbox is not None and mode is AuthMode.SANDBOX:
            options = self.sandbox.options
            base_url = SANDBOX_BASE_URL
            transport = transport or httpx.ASGITransport(app=self.sandbox.app)
            self._auth: AkSkAuth | IamTokenAuth = AkSkAuth(
                options.access_key, options.secret_key, project_id=options.project_id
            )
        else:
            base_url = self.settings.ecs_base_url() or SANDBOX_BASE_URL
            self._auth = self._auth_from_settings()
        self.base_url = base_url
        self._http = _CookielessClient(
            auth=self._auth,
            transport=transport,
            timeout=httpx.Timeout(self.settings.timeout_seconds),
            limits=httpx.Limits(
                max_connections=100, max_keepalive_connections=50, keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS
            ),
            headers={"User-Agent": f"flexus-ops/{__version__}"},
        )
        check_liveness_cheaply(self._http)
        self._limit = asyncio.Semaphore(self.settings.max_concurrency)
        self._project_lock = asyncio.Lock()

    def _auth_from_settings(self) -> AkSkAuth | IamTokenAuth:
        s = self.settings
        if s.auth_mode is AuthMode.AKSK:
            assert s.access_key is not None and s.secret_key is not None
            return AkSkAuth(
                s.access_key.get_secret_value(),
                s.secret_key.get_secret_value(),
                project_id=s.project_id,
                security_token=s.security_token.get_secret_value() if s.security_token else None,
            )
        iam = s.iam_base_url()
        assert iam is not None and s.iam_password is not None and s.iam_domain and s.iam_user
        return IamTokenAuth(
            iam,
            domain=s.iam_domain,
            user=s.iam_user,
            password=s.iam_password.get_secret_value(),
            region=s.region,
            project_id=s.project_id,
        )

    @property
    def is_sandbox(self) -> bool:
        return self.settings.uses_sandbox

    def describe_target(self) -> str:
        return self.settings.describe_target()

    async def __aenter__(self) -> FlexusClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- plumbing ---------------------------------------------------------------------------

    async def project_id(self) -> str:
        """The project id: configured, or resolved once per client like the SDK does."""
        if self._auth.project_id:
            return self._auth.project_id
        async with self._project_lock:
            if self._auth.project_id:
                return self._auth.project_id
            if isinstance(self._auth, IamTokenAuth):
                try:
                    await self._auth.ensure_token(self._http)
                except httpx.TransportError as exc:  # IAM unreachable: a network failure, said as one
                    raise TransportError(f"IAM token: {type(exc).__name__}: {exc}", may_have_applied=False) from None
            else:
                iam = self.settings.iam_base_url() or self.base_url
                response = await self._send("GET", f"{iam}/v3/projects", query=[("name", self.settings.region)])
                projects = response.json().get("projects", [])
                if len(projects) != 1:
                    raise ConfigurationError(
                        f"found {len(projects)} projects named {self.settings.region}; set HUAWEICLOUD_SDK_PROJECT_ID"
                    )
                self._auth.project_id = projects[0]["id"]
        if not self._auth.project_id:
            raise ConfigurationError("could not learn the project id; set HUAWEICLOUD_SDK_PROJECT_ID")
        return self._auth.project_id

    async def _url(self, tail: str) -> str:
        return f"{self.base_url}/v1/{await self.project_id()}{tail}"

    def _backoff(self, attempt: int, retry_after: float | None = None) -> float:
        ceiling = min(self.settings.retry_max_seconds, self.settings.retry_base_seconds * (2**attempt))
        wait = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after is not None:
            # The gateway says when to come back; honour it, but never wait longer than the cap.
            wait = max(wait, min(retry_after, self.settings.retry_max_seconds))
        return wait

    async def _send(
        self,
        method: str,
        url: str,
        *,
        query: list[tuple[str, Any]] | None = None,
        body: dict[str, Any] | None = None,
    ) -> httpx.Response:
        is_read = method == "GET"
        content = json.dumps(body).encode("utf-8") if body is not None else None
        headers = {"Content-Type": GET_CONTENT_TYPE if is_read else WRITE_CONTENT_TYPE}
        if query:
            url = f"{url}?{canonical_query(query)}"
        path = unquote(urlsplit(url).path)  # urlsplit is cached; httpx.URL would parse the whole URL once more
        operation = operation_name(method, path, body)
        attempts = self.settings.retry_attempts
        # A read has one deadline for all its tries, so a hung cloud fails in bounded time, saying why.
        deadline = time.monotonic() + self.settings.read_deadline_seconds if is_read else None
        for attempt in range(attempts + 1):
            timeout = self.settings.timeout_seconds
            if deadline is not None:
                timeout = max(0.001, min(timeout, deadline - time.monotonic()))
            started = time.monotonic()
            try:
                async with self._limit:
                    response = await self._http.request(
                        method, url, content=content, headers=headers, timeout=httpx.Timeout(timeout)
                    )
            except httpx.TransportError as exc:
                observe_request(operation, "error", time.monotonic() - started)
                # A refused connection never reached the cloud; anything later might have.
                reached = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if isinstance(exc, httpx.LocalProtocolError):  # it quotes the header it refused: a credential
                    raise ConfigurationError(
                        f"{method} {path}: the request could not be formed (a header value the HTTP library "
                        "refuses: check the credentials' settings); nothing was sent"
                    ) from None
                if (
                    is_read
                    and attempt < attempts
                    and await self._retry(method, path, why, attempt, deadline, operation)
                ):
                    continue
                raise TransportError(
                    f"{method} {path}: {why}{self._gave_up(attempt, deadline)}",
                    may_have_applied=reached and not is_read,
                ) from None
            observe_request(operation, response.status_code, time.monotonic() - started)
            if response.status_code < 400:
                return response
            error = error_from_response(response)
            retryable = error.status == 429 or (is_read and error.status >= 500)
            if retryable and attempt < attempts:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                why = f"{error.status} {error.code}"
                if await self._retry(method, path, why, attempt, deadline, operation, retry_after, error.status):
                    continue
            raise error
        raise AssertionError("unreachable")  # pragma: no cover

    async def _retry(
        self,
        method: str,
        path: str,
        why: str,
        attempt: int,
        deadline: float | None,
        operation: str,
        retry_after: float | None = None,
        status: int | str = "error",
    ) -> bool:
        """Wait before the next try and say so; False when the read's deadline leaves no time for it."""
        wait = self._backoff(attempt, retry_after)
        if deadline is not None and time.monotonic() + wait >= deadline:
            return False
        notice = (
            f"{method} {path}: {bounded(why, 200)}; retrying in {wait:.1f} s "
            f"(try {attempt + 2} of {self.settings.retry_attempts + 1})"
        )
        observe_retry(operation, status, wait, attempt + 2, retry_after, notice)
        listener = retry_listener.get()
        if listener is not None:
            await listener(notice)
        await asyncio.sleep(wait)
        return True

    def _gave_up(self, attempt: int, deadline: float | None) -> str:
        if attempt == 0:
            return ""
        limit = f" within the {self.settings.read_deadline_seconds:.0f} s read deadline" if deadline else ""
        return f" (gave up after {attempt + 1} tries{limit}; FLEXUS_READ_DEADLINE sets it)"

    # -- reads ------------------------------------------------------------------------------

    async def show_server(self, server_id: str) -> ServerDetail:
        if problem := rules.problem_with_server_id(server_id):
            raise InvalidInput("server_id", problem)
        response = await self._send("GET", await self._url(f"/cloudservers/{server_id}"))
        return ServerDetail.model_validate(response.json()["server"])

    async def list_servers(self, query: ListServersQuery | None = None, **filters: Any) -> ListServersResponse:
        """One page. ``offset`` is the page number (1-based), ``limit`` the page size (<= 1000)."""
        if query is None:
            query = validated(ListServersQuery, **filters)
        elif filters:
            raise TypeError("pass either a ListServersQuery or keyword filters, not both")
        return await self._page(query, ListServersResponse)

    async def list_server_rows(self, query: ListServersQuery) -> ServerRows:
        """One page as a listing shows it (``ServerRow``: the compact summary's fields); the rest of each
        server is skipped while parsing, half the CPU of full models."""
        return await self._page(query, ServerRows)

    async def _page(self, query: ListServersQuery, model: type[Page]) -> Page:
        """One page parsed into ``model``. Many ids: at most 100 per query (the reference's advice; a longer
        URI is refused by gateways), the queries concurrent within the client's limit (``_send`` holds the
        semaphore), the answers joined in the order the ids were asked for."""
        if query.server_id and len(query.server_id) > rules.MAX_IDS_PER_QUERY:
            chunks = _chunks(query.server_id, rules.MAX_IDS_PER_QUERY)
            pages = await asyncio.gather(
                *(self._page(query.model_copy(update={"server_id": chunk}), model) for chunk in chunks)
            )
            servers = [server for page in pages for server in page.servers]
            return model(count=sum(page.count for page in pages), servers=servers)
        response = await self._send("GET", await self._url("/cloudservers/detail"), query=query.to_query())
        # Parsed straight from bytes by pydantic-core: a third faster than json.loads then validate.
        return model.model_validate_json(response.content)

    async def list_all_servers(self, page_size: int = rules.MAX_PAGE_SIZE, **filters: Any) -> list[ServerDetail]:
        """Every match: the first page tells the count, the other pages are read concurrently."""
        if "offset" in filters or "marker" in filters or "limit" in filters:
            raise InvalidInput("offset", "list_all_servers pages by itself; use list_servers for one page")
        base = validated(ListServersQuery, limit=page_size, offset=1, **filters)
        first = await self.list_servers(base)
        if base.server_id:
            return first.servers
        return await self._other_pages(base, first, self.list_servers)

    async def list_all_summaries(self, page_size: int = rules.MAX_PAGE_SIZE, **filters: Any) -> list[ServerSummary]:
        """Every match as id, name, status and tags only, paged like ``list_all_servers``: the rest of
        each answer is skipped while parsing, for a whole-fleet index (a seventh of the CPU, a tenth of
        the memory of full models)."""
        if paging := next((name for name in ("offset", "marker", "limit", "server_id") if name in filters), None):
            raise InvalidInput(paging, "list_all_summaries reads the whole listing; use list_servers for a page or ids")
        base = validated(ListServersQuery, limit=page_size, offset=1, **filters)
        first = await self._summaries(base)
        return await self._other_pages(base, first, self._summaries)

    async def _summaries(self, query: ListServersQuery) -> ServerSummaries:
        return await self._page(query, ServerSummaries)

    async def _other_pages(
        self,
        base: ListServersQuery,
        first: Page,
        read: Callable[[ListServersQuery], Awaitable[Page]],
    ) -> list[Any]:
        """The pages after the first, read concurrently (the first told the count), joined in order."""
        page_size = base.limit or rules.MAX_PAGE_SIZE
        pages = -(-first.count // page_size)
        rest = await asyncio.gather(*(read(base.model_copy(update={"offset": page})) for page in range(2, pages + 1)))
        seen: set[str] = set()
        servers: list[Any] = []
        # A server created or deleted while paging can shift entries between pages; keep each once.
        for page in [first, *rest]:
            for server in page.servers:
                if server.id not in seen:
                    seen.add(server.id)
                    servers.append(server)
        return servers

    async def show_job(self, job_id: str) -> Job:
        response = await self._send("GET", await self._url(f"/jobs/{self._checked_job_id(job_id)}"))
        return Job.model_validate_json(response.content)

    @staticmethod
    def _checked_job_id(job_id: str) -> str:
        if not job_id or len(job_id) > 64 or not job_id.replace("-", "").isalnum():
            raise InvalidInput("job_id", "must be the job id a batch call returned (letters, digits, '-')")
        return job_id

    # -- batch power actions -----------------------------------------------------------------

    async def batch_start(self, server_ids: Sequence[str]) -> BatchSubmission:
        return await self._power("os-start", server_ids, None)

    async def batch_stop(self, server_ids: Sequence[str], type: PowerType = "SOFT") -> BatchSubmission:
        return await self._power("os-stop", server_ids, type)

    async def batch_reboot(self, server_ids: Sequence[str], type: PowerType = "SOFT") -> BatchSubmission:
        return await self._power("reboot", server_ids, type)

    async def _power(self, action: str, server_ids: Sequence[str], kind: str | None) -> BatchSubmission:
        ids = list(server_ids)
        if problem := rules.problem_with_server_ids(ids, limit=None):
            raise InvalidInput("server_ids", problem)
        if kind is not None and kind not in ("SOFT", "HARD"):
            raise InvalidInput("type", "must be SOFT or HARD")
        url = await self._url("/cloudservers/action")

        async def submit(chunk: list[str]) -> SubmittedJob:
            inner: dict[str, Any] = {"servers": [{"id": server_id} for server_id in chunk]}
            if kind is not None:
                inner["type"] = kind
            response = await self._send("POST", url, body={action: inner})
            return SubmittedJob(job_id=response.json()["job_id"], server_ids=chunk)

        chunks = _chunks(ids, rules.MAX_SERVERS_PER_REQUEST)
        outcomes = await asyncio.gather(*(submit(chunk) for chunk in chunks), return_exceptions=True)
        submission = BatchSubmission(action=action)
        for chunk, outcome in zip(chunks, outcomes, strict=True):
            if isinstance(outcome, SubmittedJob):
                submission.jobs.append(outcome)
            elif isinstance(outcome, CloudError):
                submission.failed.append(
                    FailedChunk(server_ids=chunk, status=outcome.status, code=outcome.code, message=outcome.message)
                )
            elif isinstance(outcome, TransportError):
                submission.failed.append(
                    FailedChunk(
                        server_ids=chunk,
                        status=None,
                        code="TRANSPORT",
                        message=str(outcome),
                        may_have_applied=outcome.may_have_applied,
                    )
                )
            else:
                raise outcome
        if not submission.jobs:
            # Nothing was submitted: the first error says why, exactly as for a single request.
            first = next(o for o in outcomes if isinstance(o, FlexusError))
            raise first
        return submission

    # -- password reset and update ----------------------------------------------------------

    async def batch_reset_password(
        self,
        server_ids: Sequence[str],
        new_password: str | SecretStr | None,
        *,
        dry_run: bool = False,
    ) -> ResetPasswordResult:
        """Reset the OS password of servers (PUT os-reset-passwords). It takes effect after a (re)start.

        ``dry_run=True`` asks the API to check the request without changing anything.
        """
        secret = (
            new_password if isinstance(new_password, SecretStr) or new_password is None else SecretStr(new_password)
        )
        request = validated(ResetPasswordRequest, new_password=secret, dry_run=dry_run, server_ids=list(server_ids))
        if request.new_password is None and not dry_run:
            raise InvalidInput("new_password", "is required unless dry_run is true")
        url = await self._url("/cloudservers/os-reset-passwords")
        body: dict[str, Any] = {}
        if request.new_password is not None:
            body["new_password"] = request.new_password.get_secret_value()
        body["dry_run"] = dry_run
        body["servers"] = [{"id": server_id} for server_id in request.server_ids]
        response = await self._send("PUT", url, body=body)
        accepted = [entry["id"] for entry in response.json().get("response", [])]
        return ResetPasswordResult(server_ids=accepted, dry_run=dry_run)

    async def update_server(
        self,
        server_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        hostname: str | None = None,
        user_data: str | None = None,
        security_options: SecurityOptions | None = None,
    ) -> UpdateServerResult:
        """Change name, description, hostname (takes effect after a reboot), user_data or security options."""
        if problem := rules.problem_with_server_id(server_id):
            raise InvalidInput("server_id", problem)
        request = validated(
            UpdateServerRequest,
            name=name,
            description=description,
            hostname=hostname,
            user_data=user_data,
            security_options=security_options,
        )
        try:
            body = request.to_body()
        except ValueError as exc:
            raise InvalidInput("server", str(exc)) from None
        response = await self._send("PUT", await self._url(f"/cloudservers/{server_id}"), body=body)
        return UpdateServerResult.model_validate(response.json()["server"])

    # -- jobs --------------------------------------------------------------------------------

    async def wait_for_job(
        self,
        job_id: str,
        *,
        max_wait_seconds: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> JobResult:
        """Poll ShowJob until SUCCESS or FAIL, backing off; per-server outcomes come from sub_jobs. INIT and
        RUNNING are polled; PENDING_PAYMENT is returned at once (no poll pays an order). Gives up after
        ``max_wait_seconds`` (default FLEXUS_JOB_WAIT_SECONDS) with ``JobTimeout``: the job goes on.

        The interval runs from one poll's start to the next, so a slow answer does not push every later
        poll back; only the answer that stops the wait is parsed into every server's outcome."""
        if max_wait_seconds is None:
            max_wait_seconds = self.settings.job_wait_seconds
        url = await self._url(f"/jobs/{self._checked_job_id(job_id)}")
        started = time.monotonic()
        interval = self.settings.job_poll_seconds
        while True:
            polled_at = time.monotonic()
            body = (await self._send("GET", url)).content
            poll = JobPoll.from_body(job_id, body)
            job: Job | None = None
            if poll is None:  # off the documented shape: validated in full, failing as show_job fails
                job = Job.model_validate_json(body)
                poll = JobPoll.from_job(job_id, job)
            if on_progress is not None:
                maybe = on_progress(poll)
                if inspect.isawaitable(maybe):
                    await maybe
            if poll.stops_waiting:
                return JobResult.from_job(job_id, job or Job.model_validate_json(body))
            waited = time.monotonic() - started
            if waited + interval > max_wait_seconds:
                raise JobTimeout(job_id, waited, poll.status)
            await asyncio.sleep(max(0.0, polled_at + interval - time.monotonic()))
            interval = min(interval * 1.5, self.settings.job_poll_max_seconds)

    async def wait_for_jobs(
        self,
        job_ids: Sequence[str],
        *,
        max_wait_seconds: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> list[JobResult]:
        return list(
            await asyncio.gather(
                *(
                    self.wait_for_job(job_id, max_wait_seconds=max_wait_seconds, on_progress=on_progress)
                    for job_id in job_ids
                )
            )
        )
