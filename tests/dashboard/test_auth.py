"""The dashboard's token beyond loopback (dashboard/auth.py): refused requests get 403 and
touch no run; the token works in the URL, then as a cookie, or in a header."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request

import pytest

pytest.importorskip("dash", reason="the dashboard extra is not installed")

from accelscope.dashboard.app import create_app  # noqa: E402
from accelscope.dashboard.auth import TOKEN_COOKIE, choose_token, is_loopback  # noqa: E402
from accelscope.dashboard.server import background_server  # noqa: E402

TOKEN = "s3cret-token"


def _get(url: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture()
def served(recorded_run):
    app = create_app([recorded_run], token=TOKEN)
    with background_server(app) as url:
        yield app, url


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
                                               ("0.0.0.0", False), ("10.1.2.3", False), ("::", False), ("node7.cluster", False)])
def test_loopback_hosts_are_told_apart(host, loopback):
    assert is_loopback(host) is loopback


def test_a_token_is_required_beyond_loopback_unless_opted_out():
    assert choose_token("127.0.0.1") is None
    generated = {choose_token("0.0.0.0") for _ in range(3)}
    assert len(generated) == 3 and all(len(t) >= 40 for t in generated), "a new random token per start"
    assert choose_token("0.0.0.0", token="mine") == "mine" and choose_token("127.0.0.1", token="mine") == "mine"
    assert choose_token("0.0.0.0", no_token=True) is None


@pytest.mark.parametrize("given", [None, "wrong", TOKEN[:-1]])
def test_a_request_without_the_right_token_gets_403_and_opens_no_run(served, given):
    app, url = served
    board = app._accelscope
    page = url + ("" if given is None else f"?token={given}")
    status, _, body = _get(page)
    assert status == 403 and b"needs its token" in body
    status, _, _ = _get(url + "_dash-update-component", {"Content-Type": "application/json", "Cookie": f"{TOKEN_COOKIE}=wrong"}, b"{}")
    assert status == 403
    assert board._prepared == set() and all(v.slice_count() is None for v in board.views), "no run read"


def test_the_token_in_the_url_sets_a_cookie_the_page_then_uses(served):
    _, url = served
    status, headers, body = _get(url + f"?token={TOKEN}")
    assert status == 200 and b"accelscope" in body
    cookie = headers.get("Set-Cookie", "")
    assert cookie.startswith(f"{TOKEN_COOKIE}={TOKEN}") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert _get(url, {"Cookie": f"{TOKEN_COOKIE}={TOKEN}"})[0] == 200
    assert _get(url, {"Authorization": f"token {TOKEN}"})[0] == 200


def test_the_cli_prints_a_url_with_a_token_beyond_loopback(recorded_run):
    proc = subprocess.Popen([sys.executable, "-m", "accelscope", "dashboard", str(recorded_run), "--host", "0.0.0.0", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("dashboard: http://0.0.0.0:") and "?token=" in line, line
        url = line.split()[1]
        token = url.split("?token=")[1]
        local = url.replace("0.0.0.0", "127.0.0.1")
        assert _get(local.split("?")[0])[0] == 403
        assert _get(local)[0] == 200 and len(token) >= 40
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert "without a token" not in err
