"""``mpt_async.Client``: the public face of the transport."""

from __future__ import annotations

import copy as _copy
import os
import re
import sys
import weakref
from collections.abc import AsyncIterable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import attrs
import httpx

from mpt_async._aiohttp_transport import AIOHTTP_AVAILABLE, AutoTransport
from mpt_async._auth import (
    V2_KEY_PREFIX,
    AccessTokenAuth,
    AKSKAuth,
    APIKeyAuth,
    Auth,
    FixedTokenAuth,
    auth_from_env,
    base_url_from_env,
    check_api,
    iam_base_url_from_env,
)
from mpt_async._backoff import Backoff
from mpt_async._exceptions import ConfigurationError
from mpt_async._logging import logger
from mpt_async._options import ChatOptions, check_names
from mpt_async._priority import Priority, check_priority
from mpt_async._proxy import Proxies, check_proxy
from mpt_async._timeouts import DEFAULT_TIMEOUTS, TimeoutLike, Timeouts, as_timeouts
from mpt_async._tls import TLS, check_verify
from mpt_async._validate import check_bool, check_instance, check_int, check_str, refuse

if TYPE_CHECKING:
    import ssl

    from typing_extensions import Self, Unpack

    from mpt_async import _telemetry
    from mpt_async._batch import Batch, BatchInput, ProgressHook
    from mpt_async._dialect import API
    from mpt_async._limiter import Limiter

    # Loaded on first use (by the first client or call), not by ``import mpt_async``.
    from mpt_async._models import ChatRequest, ChatResponse, MessageLike
    from mpt_async._ratelimit import LearnedLimits, RateLimits
    from mpt_async._request_loop import CallOptions, OpenStream
    from mpt_async._stream import ChatStream
    from mpt_async._token_store import TokenStore

__all__ = ["DEFAULT_ENDPOINT", "Client"]

#: The API name used when none is given (the one Baidu's examples use).
DEFAULT_ENDPOINT = "mpt-30b-instruct"
_ENDPOINT = re.compile(r"[A-Za-z0-9._~-]+")
_DEFAULT_BACKOFF = Backoff()


def _pick_transport(
    limits: httpx.Limits, tls: TLS | None = None, proxies: Proxies | None = None
) -> httpx.AsyncBaseTransport:
    """Pick the transport under the client's own ``httpx.AsyncClient``.

    aiohttp on asyncio when installed, else mpt_async's pool; ``MPT_ASYNC_TRANSPORT`` picks
    one (``httpx``: httpx's own). Each is handed the client's TLS settings and proxies.
    """
    tls = TLS() if tls is None else tls
    proxies = Proxies(trust_env=False) if proxies is None else proxies
    choice = os.environ.get("MPT_ASYNC_TRANSPORT", "auto")
    if choice == "httpx":
        from mpt_async._httpx_transport import HttpxTransport

        return HttpxTransport(limits, tls, proxies)
    if choice == "pool" or (choice == "auto" and not AIOHTTP_AVAILABLE):
        from mpt_async._pool import PoolTransport

        return PoolTransport(limits=limits, tls=tls, proxies=proxies)
    if choice not in ("auto", "aiohttp"):
        msg = f"MPT_ASYNC_TRANSPORT must be auto, pool, httpx or aiohttp, not {choice!r}"
        raise ConfigurationError(msg)
    if not AIOHTTP_AVAILABLE:
        msg = "MPT_ASYNC_TRANSPORT=aiohttp needs aiohttp: pip install 'mpt-async[speed]'"
        raise ConfigurationError(msg)
    return AutoTransport(limits, tls, proxies)


def _on_trio() -> bool:
    trio = sys.modules.get("trio")  # if trio was never imported, it is not running
    if trio is None:
        return False
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


def _pool_name(wire: object) -> str:
    parser = getattr(wire, "_parser", None)
    if parser is None:  # what the pool picks at its first connection
        import importlib.util

        parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"pool+{parser}"


def _transport_in_use(http: httpx.AsyncClient, owned: bool) -> str:
    """What :attr:`Client.http_transport` says of ``http`` (see there)."""
    wire = getattr(http, "_transport", None) if owned else None
    if isinstance(wire, AutoTransport):
        return _pool_name(None) if _on_trio() else "aiohttp"
    pool = sys.modules.get("mpt_async._pool")  # loaded if a pool was made
    if pool is not None and isinstance(wire, pool.PoolTransport):
        return _pool_name(wire)
    if isinstance(wire, httpx.AsyncHTTPTransport):
        return "httpx"
    return "custom"


class _OwnHTTP(httpx.AsyncClient):
    """The client's own httpx client: once closed, a request fails as a connection error.

    httpx raises a bare ``RuntimeError``; a call in flight while the client is closed (its
    retry, its token fetch) must end in a typed error like any connection failure.
    """

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        if self.is_closed:
            msg = "the client was closed"
            raise httpx.ConnectError(msg, request=request)
        return await super().send(request, **kwargs)


def _http_client(
    http_client: object,
    max_connections: object,
    network: Mapping[str, object],
    base_url: str,
) -> tuple[httpx.AsyncClient, bool]:
    """The caller's ``httpx.AsyncClient`` checked, or a new one with a pool of that size.

    The client's own carries its TLS settings and proxies (``network``: ``verify``,
    ``proxy``, ``trust_env``) to whichever transport it picks, and says at DEBUG which
    transport and proxy it uses; the caller's owns them, so passing them with it is a
    mistake. The second item says whether the client is the library's own.
    """
    max_connections = check_int(max_connections, "max_connections", low=1)
    verify, proxy = network["verify"], network["proxy"]
    trust_env = check_bool(network["trust_env"], "trust_env")
    if http_client is None:
        tls = TLS(check_verify(True if verify is None else verify), trust_env=trust_env)
        proxies = Proxies(check_proxy(proxy), trust_env=trust_env)
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        own = _OwnHTTP(limits=limits, transport=_pick_transport(limits, tls, proxies))
        _say_route(own, proxies, base_url)
        return own, True
    if verify is not None or proxy is not None or not trust_env:
        name = "verify" if verify is not None else "proxy" if proxy is not None else "trust_env"
        refuse(name, "cannot be set with http_client=: your httpx client owns its TLS and proxies")
    checked = check_instance(
        http_client, "http_client", httpx.AsyncClient, what="an httpx.AsyncClient"
    )
    logger.debug("client for %s: your http_client, with its own transport and proxies", base_url)
    return checked, False


def _say_route(http: httpx.AsyncClient, proxies: Proxies, base_url: str) -> None:
    """Say at DEBUG which transport and proxy a new client uses (an unusable proxy fails)."""
    proxy = proxies.for_url(httpx.URL(base_url))  # the door check of the environment's
    wire = _transport_in_use(http, owned=True)
    if wire == "aiohttp":
        wire = f"aiohttp on asyncio, {_pool_name(None)} on trio"
    logger.debug("client for %s: HTTP transport %s; proxy %s (%r)", base_url, wire, proxy, proxies)


def _check_endpoint(value: object) -> str:
    if not isinstance(value, str) or not _ENDPOINT.fullmatch(value):
        msg = f"endpoint must be an API name such as {DEFAULT_ENDPOINT!r}, not {value!r}"
        raise ConfigurationError(msg)
    return value


def _check_max_retries(value: object) -> int:
    return check_int(value, "max_retries", low=0)


def _check_backoff(value: object) -> Backoff:
    return check_instance(value, "backoff", Backoff)


def _check_auth(value: object) -> Auth:
    if value is None:
        return auth_from_env()
    if isinstance(value, str):
        if value.startswith(V2_KEY_PREFIX):
            # A string is a v1 access token; a v2 key passed there would be sent as one.
            refuse(
                "auth",
                "looks like a v2 API key (bce-v3/...), but a string means a v1 access token: "
                "pass auth=APIKeyAuth(key), or set QIANFAN_API_KEY",
            )
        return FixedTokenAuth(value)
    if not isinstance(value, (APIKeyAuth, AccessTokenAuth, AKSKAuth, FixedTokenAuth)):
        refuse(
            "auth",
            "must be an APIKeyAuth, AccessTokenAuth, AKSKAuth or FixedTokenAuth, an access "
            f"token string, or None; not {type(value).__name__}",
        )
    return value


_APPID = re.compile(r"[\x21-\x7e]{1,128}")


def _check_appid(value: object) -> str | None:
    if value is None:
        return None
    text = check_str(value, "appid")
    if not _APPID.fullmatch(text):
        refuse("appid", "must be 1 to 128 printable ASCII characters, without spaces")
    return text


def _check_extra_body(value: object, api: API) -> Mapping[str, Any] | None:
    """Extra body fields: names to JSON values, copied (so later edits do not leak in).

    None may be a field the client writes itself on ``api``: an option belongs in the call.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        refuse("extra_body", "must be a mapping with string keys, or None")
    from mpt_async._converter import dumps
    from mpt_async._dialect import OWN_FIELDS

    if own := sorted(OWN_FIELDS[api].intersection(value)):
        refuse(
            "extra_body",
            f"may not set {', '.join(map(repr, own))}: the client writes it on {api} (pass "
            "options to chat() or chat_stream(), the service's name as endpoint=)",
        )

    try:
        dumps(dict(value))
    except (TypeError, ValueError, OverflowError, RecursionError):
        refuse("extra_body", "must hold only JSON values")
    return _copy.deepcopy(dict(value))


def _check_token_store(value: object) -> TokenStore | None:
    if value is None:
        return None
    from mpt_async._token_store import check_token_store  # only with a store

    return check_token_store(value)


def _check_base_url(value: object) -> str:
    """An http(s) address with a host, and no credentials, query or fragment in it.

    The address is never echoed: it might hold a password.
    """
    text = check_str(value, "base_url")
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        refuse("base_url", f"must be a valid URL ({exc})")
    if url.scheme not in ("http", "https"):
        refuse("base_url", "must start with http:// or https://")
    if url.userinfo:
        refuse("base_url", "must not hold a user name or password; pass credentials as auth=")
    if not url.host:
        refuse("base_url", "has no host")
    if url.port is not None and not 0 < url.port < 65536:
        refuse("base_url", f"has port {url.port}, outside 1..65535")
    if url.query or url.fragment:
        refuse("base_url", "must not hold a query or fragment")
    return text


def _limiter(value: object, base_url: str, auth: Auth, endpoint: str) -> Limiter:
    """The limiter for a client's ``rate_limits`` (checked); every client has one."""
    from mpt_async._limiter import new_limiter
    from mpt_async._ratelimit import RateLimits

    limits = None
    if value is not None:
        limits = check_instance(value, "rate_limits", RateLimits, what="a RateLimits or None")
    return new_limiter(limits, base_url, auth, endpoint)


def _running_loop() -> object | None:
    """The event loop this code runs in: asyncio's loop, or trio's run (its token)."""
    # asyncio never imported: no asyncio loop runs (and importing it here would cost).
    asyncio = sys.modules.get("asyncio")
    loop: object | None = None if asyncio is None else asyncio._get_running_loop()
    if loop is not None:
        return loop
    trio = sys.modules.get("trio")
    if trio is None:
        return None
    try:
        return trio.lowlevel.current_trio_token()  # type: ignore[no-any-return]
    except RuntimeError:
        return None


class _LoopGuard:
    """Remembers the event loop a client first called in: its connections belong to it."""

    def __init__(self) -> None:
        self._loop: weakref.ref[object] | None = None

    def check(self) -> None:
        """Refuse a call made in another event loop than the first call's.

        Raises:
            ConfigurationError: The client was first used in another event loop.
        """
        loop = _running_loop()
        if loop is None:
            return
        if self._loop is None:
            self._loop = weakref.ref(loop)
        elif self._loop() is not loop:
            msg = (
                "this Client was first used in another event loop (each asyncio.run() or "
                "trio.run() is one), and its connections belong to that loop: make one "
                "Client per event loop, e.g. inside the function you run"
            )
            raise ConfigurationError(msg)


def _check_rest(
    token_store: object, appid: object, base_url: str, telemetry: object
) -> tuple[TokenStore | None, str | None, str, bool]:
    """The token store, appid, IAM base URL and telemetry switch, checked."""
    iam_url = _check_base_url(iam_base_url_from_env(base_url))
    return (
        _check_token_store(token_store),
        _check_appid(appid),
        iam_url,
        check_bool(telemetry, "telemetry"),
    )


def _retries(max_retries: object, backoff: object) -> tuple[int, Backoff]:
    """``max_retries`` and ``backoff``, checked."""
    return _check_max_retries(max_retries), _check_backoff(backoff)


def _telemetry_server(
    telemetry: bool, base_url: str, limiter: Limiter, endpoint: str
) -> _telemetry.Server | None:
    """Where the spans say calls go; ``None`` with telemetry off.

    With telemetry on, the learned-rate gauge reports the client's limiter.
    """
    if not telemetry:
        return None
    from mpt_async import _telemetry  # with the first client

    server = _telemetry.server_of(base_url)
    _telemetry.watch_quota(limiter, endpoint, server)
    return server


@attrs.frozen
class _Call:
    """One call, ready to go: the service's name, its body, and the request loop's options."""

    endpoint: str
    body: bytes
    options: CallOptions


class Client:
    """An async client for one MPT-30B-instruct service.

    Use it as ``async with Client(...) as client``, or call :meth:`aclose` when done.
    Every call goes through one pooled ``httpx.AsyncClient``.

    Args:
        endpoint: The service's API name, chosen when it was deployed (sent as ``model`` on
            v2).
        auth: :class:`APIKeyAuth` (a v2 API key), :class:`AKSKAuth` (IAM keys),
            :class:`AccessTokenAuth` (a v1 application's keys), :class:`FixedTokenAuth`, or a
            v1 access token string. ``None`` reads ``QIANFAN_API_KEY``,
            ``QIANFAN_ACCESS_TOKEN``, ``QIANFAN_AK`` / ``QIANFAN_SK`` or
            ``QIANFAN_ACCESS_KEY`` / ``QIANFAN_SECRET_KEY``.
        base_url: The service's address; ``None`` reads ``QIANFAN_BASE_URL``, else
            ``https://qianfan.baidubce.com`` (v2) or ``https://aip.baidubce.com`` (v1). IAM
            bearer tokens come from ``QIANFAN_IAM_BASE_URL``, else IAM's host when the
            service is Baidu's, else ``base_url``.
        timeout: A :class:`Timeouts`, or one number of seconds for every bound.
        max_retries: How many times a retryable failure is tried again.
        http_client: Your own ``httpx.AsyncClient``; it is used as is and not closed.
        backoff: The waits between retries.
        max_connections: The pool's size, when the client makes its own ``httpx`` client.
        token_store: Share the access token with other clients and processes through this
            :class:`TokenStore` (:class:`MemoryTokenStore`, :class:`FileTokenStore`); only
            used with :class:`AccessTokenAuth`, and :class:`AKSKAuth` on v2 (IAM bearer
            tokens).
        rate_limits: Ceilings and settings for the quota limiter (shared with the copies
            made by :meth:`with_options`). ``None``: the defaults of :class:`RateLimits`,
            which learn the rate the service grants; a quota refusal then waits for
            capacity instead of failing (up to ``Timeouts.quota``).
        telemetry: Trace and measure every call with OpenTelemetry, when its API is installed
            (the ``otel`` extra); ``False`` turns it off (for the copies too).
        api: The service's interface: ``"v2"`` (``/v2/chat/completions``, the only one Baidu
            serves since 2026-08-31) or ``"v1"``. ``None`` lets the credentials decide: a v2
            API key and IAM AK/SK mean v2, a v1 application's keys or an access token v1.
        appid: The v2 application to bill (the ``appid`` header); ``None``: the key's default.
        extra_body: Fields added to every request body as they are, for what the service
            takes before this library knows it (a copy can change it: :meth:`with_options`).
            A field the client writes itself (``model``, ``stream``, an option of
            :meth:`chat`) is refused here: it belongs in the call.
        verify: How servers' certificates are checked, the same on every transport:
            ``None`` or ``True``, httpx's default trust (certifi's CA bundle); a path to a
            CA bundle (PEM) or directory; an ``ssl.SSLContext``; ``False``, no check at all
            (for tests only). Not with ``http_client=``: yours owns its TLS.
        proxy: The HTTP proxy every call goes through, on every transport:
            ``http://[user:password@]host:port``, or ``https://`` for TLS to the proxy too.
            ``None``: the environment's (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``,
            ``NO_PROXY``, read as httpx reads them). SOCKS proxies are not spoken: pass an
            httpx client with a SOCKS transport as ``http_client=``.
        trust_env: Whether the environment may set the proxy and the TLS trust
            (``SSL_CERT_FILE``, ``SSL_CERT_DIR``). Not ``False`` with ``http_client=``.

    Raises:
        ConfigurationError: For missing credentials or a bad option.
    """

    def __init__(
        self,
        *,
        endpoint: str = DEFAULT_ENDPOINT,
        auth: Auth | str | None = None,
        base_url: str | None = None,
        timeout: TimeoutLike = DEFAULT_TIMEOUTS,
        max_retries: int = 2,
        http_client: httpx.AsyncClient | None = None,
        backoff: Backoff = _DEFAULT_BACKOFF,
        max_connections: int = 100,
        token_store: TokenStore | None = None,
        rate_limits: RateLimits | None = None,
        telemetry: bool = True,
        api: API | None = None,
        appid: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        verify: bool | str | os.PathLike[str] | ssl.SSLContext | None = None,
        proxy: str | None = None,
        trust_env: bool = True,
    ) -> None:
        endpoint = _check_endpoint(endpoint)
        auth = _check_auth(auth)
        api = check_api(auth, api)
        base_url = _check_base_url(base_url or base_url_from_env(api))
        self._extra_body = _check_extra_body(extra_body, api)
        from mpt_async._request_loop import CallOptions, RequestLoop  # with the first client

        self._options = CallOptions(as_timeouts(timeout), *_retries(max_retries, backoff))
        limiter = _limiter(rate_limits, base_url, auth, endpoint)  # all checked: then HTTP
        token_store, appid, iam_url, telemetry = _check_rest(
            token_store, appid, base_url, telemetry
        )
        network = {"verify": verify, "proxy": proxy, "trust_env": trust_env}
        http_client, owns_http = _http_client(http_client, max_connections, network, base_url)
        self._endpoint = endpoint
        self._request_loop = RequestLoop(
            http=http_client,
            owns_http=owns_http,
            base_url=base_url,
            auth=auth,
            token_store=token_store,
            limiter=limiter,
            api=api,
            appid=appid,
            iam_base_url=iam_url,
        )
        self._server = _telemetry_server(telemetry, base_url, limiter, endpoint)
        self._is_copy = False
        self._loop_guard = _LoopGuard()  # shared with the copies, as the connections are

    def __repr__(self) -> str:
        return (
            f"Client(endpoint={self._endpoint!r}, api={self._request_loop.api!r}, "
            f"base_url={self._request_loop.base_url!r}, auth={self._request_loop.auth!r})"
        )

    @property
    def endpoint(self) -> str:
        """The API name this client calls."""
        return self._endpoint

    @property
    def api(self) -> API:
        """The service's interface this client speaks, ``"v1"`` or ``"v2"``."""
        return self._request_loop.api

    @property
    def base_url(self) -> str:
        """The service's address."""
        return self._request_loop.base_url

    @property
    def timeout(self) -> Timeouts:
        """The :class:`Timeouts` in force."""
        return self._options.timeouts

    @property
    def max_retries(self) -> int:
        """How many times a retryable failure is tried again."""
        return self._options.max_retries

    def learned_limits(self) -> LearnedLimits:
        """The limits calls are held to now: learned, announced, and your ceilings."""
        return self._request_loop.limiter.learned()

    @property
    def http_transport(self) -> str:
        """The HTTP transport that carries this client's calls from the running event loop.

        ``"aiohttp"`` (on asyncio, when aiohttp is installed), ``"pool+httptools"`` or
        ``"pool+h11"`` (mpt_async's pool, and what parses the answers: httptools when it is
        installed), ``"httpx"`` (httpx's own, only when asked: ``MPT_ASYNC_TRANSPORT=httpx``),
        or ``"custom"`` (the ``http_client`` you passed). Outside an event loop: the
        transport that asyncio would use.
        """
        return _transport_in_use(self._request_loop.http, self._request_loop.owns_http)

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`aclose` has been called (on this client or the one it copies)."""
        return self._request_loop.closed

    def with_options(
        self,
        *,
        timeout: TimeoutLike | None = None,
        max_retries: int | None = None,
        backoff: Backoff | None = None,
        endpoint: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        priority: Priority | None = None,
    ) -> Client:
        """A copy with other options, sharing this client's connections and token.

        ``extra_body`` replaces the fields added to each body. ``priority`` is its calls'
        place under the quotas (``"interactive"`` by default). Closing a copy does nothing;
        close the original.
        """
        copy = _copy.copy(self)  # every attribute, so that none can be forgotten
        copy._is_copy = True
        if extra_body is not None:
            copy._extra_body = _check_extra_body(extra_body, self._request_loop.api)
        if endpoint is not None:
            copy._endpoint = _check_endpoint(endpoint)
        changes: dict[str, Any] = {}
        if timeout is not None:
            changes["timeouts"] = as_timeouts(timeout)
        if max_retries is not None:
            changes["max_retries"] = _check_max_retries(max_retries)
        if backoff is not None:
            changes["backoff"] = _check_backoff(backoff)
        if priority is not None:
            changes["priority"] = check_priority(priority)
        copy._options = attrs.evolve(self._options, **changes)
        return copy

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (unless they belong to your own ``http_client``)."""
        if not self._is_copy:
            await self._request_loop.aclose()

    # -- the one send path: every call (chat, stream, batch, conversation) goes through it --

    def _request(
        self, messages: Iterable[MessageLike], options: ChatOptions, *, stream: bool
    ) -> ChatRequest:
        """The checked request for ``messages`` and the keyword ``options`` of a call."""
        from mpt_async._models import ChatRequest

        check_names(options)
        return ChatRequest(messages=messages, stream=stream, **options)

    def _prepare(
        self, request: ChatRequest, timeout: TimeoutLike | None, priority: Priority | None = None
    ) -> _Call:
        """Where a call starts: refuse a closed client, encode the body, pick the options."""
        if self._request_loop.closed:
            msg = "the client is closed"
            raise RuntimeError(msg)
        options = self._options
        if timeout is not None:
            options = attrs.evolve(options, timeouts=as_timeouts(timeout))
        if priority is not None:
            options = attrs.evolve(options, priority=priority)
        endpoint = self._endpoint
        body = self._request_loop.dialect.encode(request, endpoint, self._extra_body)
        return _Call(endpoint, body, options)

    async def _send(
        self,
        request: ChatRequest,
        timeout: TimeoutLike | None,
        priority: Priority | None = None,
    ) -> ChatResponse:
        """Send a request for a whole answer (a ``stream`` request is sent as one)."""
        if request.stream:
            request = attrs.evolve(request, stream=False)
        call = self._prepare(request, timeout, priority)
        self._loop_guard.check()
        observer = self._observe(call.endpoint, request)
        try:
            reply = await self._request_loop.chat(call.endpoint, call.body, call.options, observer)
        except BaseException as exc:
            if observer is not None:
                observer.failed(exc)
            raise
        if observer is not None:
            observer.succeeded(reply, reply.result)
        return reply

    def _open(
        self,
        request: ChatRequest,
        timeout: TimeoutLike | None,
        priority: Priority | None = None,
    ) -> ChatStream:
        """A stream for a ``stream`` request, sent when the stream is entered."""
        from mpt_async._stream import ChatStream

        call = self._prepare(request, timeout, priority)
        request_loop, loop_guard = self._request_loop, self._loop_guard

        async def opener(observer: _telemetry.CallObserver | None) -> OpenStream:
            loop_guard.check()
            return await request_loop.open_stream(call.endpoint, call.body, call.options, observer)

        return ChatStream(opener, lambda: self._observe(call.endpoint, request))

    def _observe(self, endpoint: str, request: ChatRequest) -> _telemetry.CallObserver | None:
        """Start following a call for telemetry; ``None`` when it is off or not installed."""
        server = self._server
        if server is None:
            return None
        from mpt_async import _telemetry

        return _telemetry.observe(endpoint, server, request)

    # -- the public calls ----------------------------------------------------------------

    async def chat(
        self,
        messages: Iterable[MessageLike],
        *,
        # The client's per-call bounds on waiting (a Timeouts or seconds), not a deadline.
        timeout: TimeoutLike | None = None,
        priority: Priority | None = None,
        **options: Unpack[ChatOptions],
    ) -> ChatResponse:
        """Ask for a whole answer.

        Args:
            messages: The conversation, last turn the user's: :class:`Message` objects or
                ``{"role": ..., "content": ...}`` dicts.
            timeout: Override the client's timeouts for this call.
            priority: Its place under the quotas: ``"interactive"`` (the client's default
                unless ``with_options`` set another) or ``"batch"``, which waits while any
                interactive call waits.
            **options: The sampling options: ``temperature``, ``top_k``, ``top_p``,
                ``penalty_score``, ``stop``, ``user_id``, ``metadata`` (see
                :class:`ChatOptions`).

        Raises:
            RequestValidationError: Before sending, if a rule of the API is broken.
            ConfigurationError: Before sending, for a bad ``priority``.
            APIError: If the service refused the call (a subclass says why).
            APIConnectionError: If no answer came back, after the retries.
        """
        checked = None if priority is None else check_priority(priority)
        return await self._send(self._request(messages, options, stream=False), timeout, checked)

    def chat_stream(
        self,
        messages: Iterable[MessageLike],
        *,
        timeout: TimeoutLike | None = None,
        priority: Priority | None = None,
        **options: Unpack[ChatOptions],
    ) -> ChatStream:
        """Ask for an answer sentence by sentence.

        The request is checked now and sent when the stream is entered (or first iterated).
        ``timeout``'s ``stream_read`` bounds the wait for each chunk (bytes that bring no
        chunk do not reset it), and its ``total`` the whole stream. The arguments are those
        of :meth:`chat`.

        Raises:
            RequestValidationError: At once, if a rule of the API is broken.
            ConfigurationError: At once, for a bad ``priority``.
        """
        checked = None if priority is None else check_priority(priority)
        return self._open(self._request(messages, options, stream=True), timeout, checked)

    def batch(
        self,
        requests: Iterable[BatchInput] | AsyncIterable[BatchInput],
        *,
        concurrency: int | None = None,
        on_progress: ProgressHook | None = None,
        total: int | None = None,
        priority: Priority = "batch",
        **options: Unpack[ChatOptions],
    ) -> Batch:
        """Run many independent chats side by side, results as they complete.

        ``concurrency`` defaults to 8 calls in flight.

        Use it as ``async with client.batch(requests) as results: async for item in
        results``; each item is a :class:`BatchResult` with the input's ``index`` and its
        ``response`` or its ``error``. See :class:`Batch` for the arguments; ``**options``
        (:class:`ChatOptions`) apply to every input but a :class:`ChatRequest`. Its calls
        are ``"batch"`` calls under the quotas unless ``priority`` says otherwise.

        Raises:
            RequestValidationError: ``requests`` is not an iterable of inputs, or an option
                breaks a rule of the API.
            ConfigurationError: A bad ``concurrency``, ``on_progress``, ``total`` or
                ``priority``.
        """
        from mpt_async._batch import DEFAULT_CONCURRENCY, Batch  # loaded when first used

        return Batch(
            self,
            requests,
            concurrency=DEFAULT_CONCURRENCY if concurrency is None else concurrency,
            on_progress=on_progress,
            total=total,
            priority=priority,
            **options,
        )
