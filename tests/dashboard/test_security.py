"""The dashboard serves only the runs it was given: nothing the browser sends reaches the filesystem."""

import builtins
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("dash", reason="the dashboard extra is not installed")

from accelscope.dashboard import app as app_mod  # noqa: E402
from accelscope.dashboard.app import create_app  # noqa: E402
from accelscope.dashboard.sections import kernels, metrics, overview, steps  # noqa: E402

HOSTILE = ["../../etc/passwd", "/etc/passwd", str(Path.home()), {"path": "/etc"}, ["/etc"], -1, 10**9, True, 1.0, None]


@pytest.fixture(scope="module")
def app_and_board(recorded_run):
    app = create_app([recorded_run])
    board = app._accelscope
    board.figures(0)  # the one legitimate load, before the guard goes up
    return app, board


@pytest.fixture()
def no_file_access(monkeypatch, recorded_run):
    """Fail the test if anything opens, lists or stats a path outside the served run."""
    allowed = str(Path(recorded_run).resolve())
    real_open, real_listdir, real_scandir = builtins.open, os.listdir, os.scandir
    touched = []

    def check(path):
        p = str(Path(os.fsdecode(path)).resolve()) if isinstance(path, (str, bytes, os.PathLike)) else ""
        if p and not p.startswith(allowed) and "site-packages" not in p and "/proc/" not in p:
            touched.append(p)

    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: (check(f), real_open(f, *a, **k))[1])
    monkeypatch.setattr(os, "listdir", lambda p=".": (check(p), real_listdir(p))[1])
    monkeypatch.setattr(os, "scandir", lambda p=".": (check(p), real_scandir(p))[1])
    return touched


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_run_values_render_nothing_and_touch_no_file(app_and_board, no_file_access, value):
    _, board = app_and_board
    assert board.index(value) is None
    with pytest.raises(Exception) as info:
        overview.render(board, value)
    assert type(info.value).__name__ == "PreventUpdate"
    with pytest.raises(Exception) as info:
        board.header(value)
    assert type(info.value).__name__ == "PreventUpdate"
    for section in (metrics, kernels, steps):
        with pytest.raises(Exception) as info:
            section.render(board, {"run": value, "n": 1})
        assert type(info.value).__name__ == "PreventUpdate"
    with pytest.raises(Exception) as info:
        board.sections["timeline"].zoom({"xaxis.range[0]": 0, "xaxis.range[1]": 1}, value)
    assert type(info.value).__name__ == "PreventUpdate"
    assert no_file_access == []


@pytest.mark.parametrize("relayout", [{"xaxis.range": ["/etc/passwd", 5]}, {"xaxis.range": [float("nan"), 1]}, {"xaxis.range[0]": 5, "xaxis.range[1]": 1}, "../../etc", None])
def test_hostile_zooms_are_ignored(app_and_board, no_file_access, relayout):
    _, board = app_and_board
    with pytest.raises(Exception) as info:
        board.sections["timeline"].zoom(relayout, 0)
    assert type(info.value).__name__ == "PreventUpdate"
    assert no_file_access == []


@pytest.mark.parametrize("url", ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/assets/../../../../etc/passwd", "/_dash-component-suites/../../etc/passwd"])
def test_urls_never_serve_files_outside_the_app(app_and_board, url):
    app, _ = app_and_board
    response = app.server.test_client().get(url)
    assert b"root:" not in response.data


def test_debug_is_off_and_the_default_host_is_loopback(app_and_board):
    import inspect

    from accelscope.cli import build_parser

    app, _ = app_and_board
    assert not app.server.debug
    assert inspect.signature(app_mod.serve).parameters["host"].default == "127.0.0.1"
    assert build_parser().parse_args(["dashboard", "x"]).host == "127.0.0.1"


def test_binding_all_interfaces_without_a_token_warns(recorded_run):
    """With --no-token the warning is the first thing printed; stop it right after. (The
    default beyond loopback is a token: tests/dashboard/test_auth.py.)"""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "accelscope", "dashboard", str(recorded_run), "--host", "0.0.0.0", "--port", str(port), "--no-token"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        first = proc.stderr.readline()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert "warning: serving on 0.0.0.0 without a token" in first
