"""Live mode: a run still being recorded updates on the page as it grows.

While a shown run is still recording (``meta.complete`` false), the page polls the run's
on-disk fingerprint (``Run.fingerprint``: a few stat calls) every ``LIVE_POLL_MS``. When new
parts were flushed, the run is reopened, every cache of it dropped, and the run picker
re-emits its value, so every section redraws from the new data with no page reload.
Polling stops once the run is complete and its final state shown.

The badge says what the recorder's live analysis last wrote (``RUN/live.json``, or each
rank's ``RUN/rank-N/live.json``: steps so far, the recent steps' input share and verdict),
read as it is, never recomputed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from accelscope.errors import require
from accelscope.traces import ranks
from accelscope.traces.run import LIVE_FILE, run_fingerprint

LIVE_POLL_MS = 2000


def _read_status(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((path / LIVE_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def live_status(path: Any) -> dict[str, Any] | None:
    """The live analysis' last status of a run directory, or None (not written, or a torn
    write caught mid-update: the next poll reads it again). In a multi-rank run every rank
    writes its own (``RUN/rank-N/live.json``); the job's status is picked from them, not
    recomputed: steps so far of the rank furthest behind, the recent input wait of the
    rank that waits most (named in ``recent["rank"]``), and every rank's flagged steps."""
    path = Path(path)
    if not ranks.is_multi_rank(path):
        return _read_status(path)
    found = {rank: doc for rank, part in ranks.rank_parts(path) if (doc := _read_status(part)) is not None}
    if not found:
        return None
    steps = [d["steps"] for d in found.values() if isinstance(d.get("steps"), int)]
    flagged = [d["flagged_steps"] for d in found.values() if isinstance(d.get("flagged_steps"), int)]
    recents = [(d["recent"].get("input_wait_share"), rank, d["recent"]) for rank, d in found.items()
               if isinstance(d.get("recent"), dict) and isinstance(d["recent"].get("input_wait_share"), (int, float))]
    out: dict[str, Any] = {"ranks_reporting": len(found)}
    if steps:
        out["steps"] = min(steps)
    if flagged:
        out["flagged_steps"] = sum(flagged)
    if recents:
        _, rank, recent = max(recents, key=lambda r: (r[0], -r[1]))
        out["recent"] = dict(recent, rank=rank)
    return out


def badge_text(status: dict[str, Any] | None) -> str:
    """The badge of a run being recorded, from its live status."""
    text = f"● recording: this page updates every {LIVE_POLL_MS / 1000:g} s"
    if not status:
        return text
    steps = status.get("steps")
    recent = status.get("recent") or {}
    parts = []
    n_ranks = status.get("ranks_reporting")
    if isinstance(n_ranks, int):
        parts.append(f"{n_ranks} ranks")
    if isinstance(steps, int):
        parts.append(f"{steps:,} steps so far" + (" (the rank furthest behind)" if isinstance(n_ranks, int) and n_ranks > 1 else ""))
    share, window, verdict = recent.get("input_wait_share"), recent.get("window"), recent.get("verdict")
    if isinstance(share, (int, float)) and isinstance(window, int) and window:
        from accelscope.verdicts import VERDICT_TEXT

        where = f" on rank {recent['rank']}" if isinstance(recent.get("rank"), int) else ""
        parts.append(f"last {window} steps: input wait {share:.0%}{where}" + (f" ({VERDICT_TEXT[verdict]})" if verdict in VERDICT_TEXT else ""))
    flagged = status.get("flagged_steps")
    if isinstance(flagged, int) and flagged:
        parts.append(f"{flagged:,} steps flagged")
    return text + (" · " + " · ".join(parts) if parts else "")


class Live:
    """Polling and the badge for a ``Dashboard``."""

    def __init__(self, board: Any):
        self.board = board
        self._fingerprints = [run_fingerprint(v.run.path) for v in board.views]

    def any_live(self) -> bool:
        return any(v.run.live for v in self.board.views)

    def poll(self, _n: Any, value: Any) -> tuple[Any, bool]:
        """Interval callback: the run's index again when it changed on disk (which redraws
        the page), else no update; and whether to keep polling."""
        dash = require("dash", "dashboard", "accelscope dashboard")
        index = self.board.requested(value)
        fp = run_fingerprint(self.board.views[index].run.path)
        if fp == self._fingerprints[index]:
            return dash.no_update, not self.any_live()
        self._fingerprints[index] = fp
        self.board.reload(index)
        return index, not self.any_live()

    def badge(self, value: Any) -> str:
        """The live badge: shown while the run is still being recorded."""
        index = self.board.index(value)
        if index is None or not self.board.views[index].run.live:
            return ""
        return badge_text(live_status(self.board.views[index].run.path))


def layout(board: Any) -> list:
    from dash import dcc, html

    live = any(v.run.live for v in board.views)
    return [html.Div(id="live-badge", className="live-badge"), dcc.Interval(id="live-poll", interval=LIVE_POLL_MS, disabled=not live)]


def register(app: Any, board: Any) -> Live:
    from dash import Input, Output, State

    s = Live(board)
    app.callback(Output("live-badge", "children"), Input("run-select", "value"))(s.badge)
    app.callback(
        Output("run-select", "value", allow_duplicate=True),
        Output("live-poll", "disabled"),
        Input("live-poll", "n_intervals"),
        State("run-select", "value"),
        prevent_initial_call=True,
    )(s.poll)
    return s
