"""A token in front of a dashboard served beyond loopback, as Jupyter does it.

Cluster users open the dashboard on a remote node, where anyone who can reach the port
could read every run. Bound to anything but loopback, the dashboard therefore requires a
token by default: generated at each start (or given with ``--token``), printed in the URL
(``?token=...``), compared in constant time, and kept in an HTTP-only cookie so the page's
own requests carry it. ``--no-token`` opts out (with a warning). Loopback stays token-free:
only this machine's users reach it, as with every local dev server.

A request without the token (in the query, the cookie or an ``Authorization: token ...``
header) gets 403 before any view runs, so it never opens or analyses a run.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from typing import Any

TOKEN_COOKIE = "accelscope_token"
TOKEN_PARAM = "token"
FORBIDDEN = "403 Forbidden: this dashboard needs its token; open the URL it printed when it started (with ?token=...)\n"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def choose_token(host: str, token: str | None = None, no_token: bool = False) -> str | None:
    """The token to require: none with ``no_token``; ``token`` when given; a new random one
    when ``host`` is not loopback; else none."""
    if no_token:
        return None
    if token:
        return token
    return None if is_loopback(host) else secrets.token_urlsafe(32)


def _matches(given: str | None, token: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())  # type: ignore[union-attr]


def protect(server: Any, token: str) -> None:
    """Require ``token`` on every request to the Flask ``server`` (register first, before
    any other ``before_request`` hook, so a refused request runs none of them)."""
    import flask

    def check() -> Any:
        request = flask.request
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if _matches(request.cookies.get(TOKEN_COOKIE), token) or (scheme.lower() in ("token", "bearer") and _matches(value.strip(), token)):
            return None
        if _matches(request.args.get(TOKEN_PARAM), token):
            flask.g.accelscope_set_cookie = True
            return None
        return flask.Response(FORBIDDEN, status=403, mimetype="text/plain")

    def remember(response: Any) -> Any:
        if flask.g.get("accelscope_set_cookie"):
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
        return response

    server.before_request(check)
    server.after_request(remember)
