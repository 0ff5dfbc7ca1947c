"""Serving a dashboard app: on a socket bound before anything says it is serving (the
CLI), or in a background thread (tests, screenshots, notebooks)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from accelscope.errors import AccelscopeError

# Debian's Chromium, driven headless by the browser tests and the screenshot script.
CHROMIUM = Path("/usr/bin/chromium")
# Without the networking flags Chromium keeps trying to reach Google on a closed network.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@contextlib.contextmanager
def background_server(app, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` (a Dash app) from a background thread; yield its URL; shut it down on exit.

    ``port=0`` picks a free port. Request logs are silenced.
    """
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = make_server(host, port, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="accelscope-dashboard", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class ServeError(AccelscopeError, ValueError):
    """The dashboard cannot listen where it was asked to (a port out of range or in use, an
    unknown host); the message says so in one line."""


def check_port(port: int) -> None:
    """Raise ServeError unless ``port`` is a TCP port number (0: any free port)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ServeError(f"--port {port}: a port is a number from 1 to 65535 (0 picks a free one)")


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening, as werkzeug would bind it (IPv6 for a
    host with a ':'), or ServeError naming the address and the reason in one line. Binding
    first means the URL printed after it is one that is served (and ``port=0``'s real port)."""
    check_port(port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        address = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, socket.IPPROTO_TCP)[0][4]
    except OSError as exc:
        raise ServeError(f"--host {host}: cannot resolve it ({exc.strerror or exc})") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as werkzeug does: a restart need not wait for TIME_WAIT
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        hint = " (pick another --port)" if port else ""
        raise ServeError(f"cannot serve on {host}:{port}: {exc.strerror or exc}{hint}") from None
    return sock


def url_of(host: str, port: int) -> str:
    """The URL a browser opens for ``host:port`` (an IPv6 host in brackets)."""
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def serve_on(app: Any, sock: socket.socket, host: str) -> None:
    """Serve ``app`` (a Dash app) on the listening ``sock`` until interrupted; request logs
    are silenced."""
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = make_server(host, sock.getsockname()[1], app.server, threaded=True, fd=sock.fileno())
    try:
        server.serve_forever()
    finally:
        server.server_close()
