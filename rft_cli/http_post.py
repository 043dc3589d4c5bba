"""One HTTP POST with a whole-request deadline, a reply cap, and no redirect followed.

Used by the model judge (`rft_cli.graders.judge`) and by tool endpoints (`rft_cli.tools.endpoint`).
Standard library only (urllib over http.client). A 3xx comes back as a reply and is never
followed, so secrets in the headers go to `url`'s origin and nowhere else. The deadline covers
connecting, sending and reading: when it passes, every socket the request opened is shut down,
which ends a read that a server drips byte by byte (a socket timeout alone only limits each
read). The reply is read to `max_bytes` at most, whatever its Content-Length says. Proxies named
in the environment (HTTPS_PROXY, NO_PROXY, ...) are used only where the caller asks: the judge
does, as it always did through urllib; a tool endpoint, usually on this machine, does not.
"""

from __future__ import annotations

import http.client
import socket
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any


class HttpFailure(Exception):
    """No reply: the address is wrong or unreachable, the connection broke, or the deadline passed."""

    def __init__(self, detail: str, timed_out: bool = False) -> None:
        super().__init__(detail)
        self.timed_out = timed_out


@dataclass
class HttpReply:
    """A reply: its status, its body (up to the cap), whether it was longer, and its Location."""

    status: int
    body: bytes
    too_large: bool = False
    location: str = ""


def check_url(url: str) -> str | None:
    """Why `url` cannot be posted to (not http(s), no host), or None."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  raises ValueError on a bad port
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"the scheme is {parts.scheme or 'missing'}; use an http:// or https:// URL"
    if not parts.hostname:
        return "the URL has no host"
    return None


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    max_bytes: int,
    proxies_from_environment: bool = False,
) -> HttpReply:
    """POST `body` to `url` and read the reply, whatever its status; raises HttpFailure when
    there is no reply."""
    import urllib.error
    import urllib.request  # here, not at the top: `rft --help` stays fast

    problem = check_url(url)
    if problem:
        raise HttpFailure(f"{url}: {problem}")
    request = urllib.request.Request(url, body, headers, method="POST")
    deadline = _Deadline(timeout)
    try:
        with deadline:
            try:
                response = _opener(deadline, proxies_from_environment).open(
                    request, timeout=timeout
                )
            except urllib.error.HTTPError as exc:  # any status but 2xx, a redirect included
                response = exc
            with response:
                data = response.read(max_bytes + 1)
            if deadline.expired:
                raise TimeoutError
            return HttpReply(
                status=response.status,
                body=data[:max_bytes],
                too_large=len(data) > max_bytes,
                location=str(response.headers.get("Location") or "")[:300],
            )
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if deadline.expired or isinstance(exc, TimeoutError):
            raise HttpFailure(
                f"no complete reply within the {timeout:g} s timeout", timed_out=True
            ) from None
        raise HttpFailure(_describe(exc)) from None


def _describe(exc: BaseException) -> str:
    import urllib.error

    if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, str):
        exc = exc.reason  # "[Errno 111] Connection refused", not "<urlopen error ...>"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


class _Deadline:
    """A whole request's time limit: at `seconds`, every socket it opened is shut down (the
    sockets themselves are kept: http.client lets go of one once a reply that closes the
    connection has begun)."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._lock = threading.Lock()

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _opener(deadline: _Deadline, proxies_from_environment: bool) -> Any:
    """urllib's opener with redirects refused and every connection watched by `deadline`."""
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None  # urllib then raises the 3xx as an HTTPError

    def watched(base: Any) -> Any:
        class Connection(base):
            def connect(self) -> None:
                super().connect()
                deadline.watch(self.sock)

        return Connection

    class HTTP(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(watched(http.client.HTTPConnection), req)

    class HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            context = getattr(self, "_context", None)  # urllib's own, from its constructor
            return self.do_open(watched(http.client.HTTPSConnection), req, context=context)

    handlers: list[Any] = [NoRedirect, HTTP, HTTPS]
    if not proxies_from_environment:
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)
