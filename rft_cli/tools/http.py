"""One HTTP POST with a whole-request deadline, a reply cap, and no redirect followed.

Standard library only (`http.client`, which never follows a redirect: a 3xx comes back as it is,
so secrets in the headers go to `url`'s origin and nowhere else). The deadline covers connecting,
sending and reading: when it passes, the socket is shut down, which ends a read that a server
drips byte by byte (a socket timeout alone only limits each read). The reply is read to
`max_bytes` at most, whatever its Content-Length says.

The judge grader's client (`rft_cli.graders.judge`) makes the same choices; the two can share
this module.
"""

from __future__ import annotations

import http.client
import socket
import threading
import urllib.parse
from dataclasses import dataclass


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


class _Deadline:
    """Shuts the connection's socket down when `seconds` have passed (the socket itself is kept:
    http.client lets go of it once a reply that closes the connection has begun)."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self.sock: socket.socket | None = None
        self.lock = threading.Lock()
        self.timer = threading.Timer(seconds, self._expire)
        self.timer.daemon = True

    def _expire(self) -> None:
        with self.lock:
            self.expired = True
            if self.sock is not None:
                _shut(self.sock)

    def watch(self, sock: socket.socket | None) -> None:
        with self.lock:
            self.sock = sock
            if self.expired and sock is not None:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def post(
    url: str, body: bytes, headers: dict[str, str], timeout: float, max_bytes: int
) -> HttpReply:
    """POST `body` to `url` and read the reply; raises HttpFailure when there is no reply."""
    problem = check_url(url)
    if problem:
        raise HttpFailure(f"{url}: {problem}")
    parts = urllib.parse.urlsplit(url)
    path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname or "", parts.port, timeout=timeout)  # check_url: a host
    deadline = _Deadline(timeout)
    deadline.timer.start()
    try:
        connection.connect()  # bounded by the socket timeout; then the deadline watches it
        deadline.watch(connection.sock)
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read(max_bytes + 1)
        if deadline.expired:
            raise TimeoutError
        return HttpReply(
            status=response.status,
            body=data[:max_bytes],
            too_large=len(data) > max_bytes,
            location=str(response.getheader("Location") or "")[:300],
        )
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if deadline.expired or isinstance(exc, TimeoutError):
            raise HttpFailure(
                f"no complete reply within the {timeout:g} s timeout", timed_out=True
            ) from None
        raise HttpFailure(_describe(exc)) from None
    finally:
        deadline.timer.cancel()
        connection.close()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
