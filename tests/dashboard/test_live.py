"""Live mode's badge says what the recorder's live analysis last wrote (RUN/live.json)."""

from __future__ import annotations

import json

from accelscope.dashboard.live import LIVE_POLL_MS, badge_text, live_status
from accelscope.traces.run import LIVE_FILE


def test_the_badge_reads_the_recorders_live_status(tmp_path):
    (tmp_path / LIVE_FILE).write_text(json.dumps({
        "steps": 1234, "flagged_steps": 7,
        "recent": {"window": 50, "input_wait_share": 0.31, "verdict": "high", "mean_step_ms": 41.0},
    }))
    text = badge_text(live_status(tmp_path))
    assert text.startswith(f"● recording: this page updates every {LIVE_POLL_MS / 1000:g} s")
    assert "1,234 steps so far" in text and "last 50 steps: input wait 31% (highly input-bound)" in text and "7 steps flagged" in text


def test_without_a_status_or_with_a_torn_one_the_badge_says_only_that_it_records(tmp_path):
    assert live_status(tmp_path) is None
    (tmp_path / LIVE_FILE).write_text('{"steps": 12, "rec')  # a reader may catch a write halfway
    assert live_status(tmp_path) is None
    assert badge_text(None) == f"● recording: this page updates every {LIVE_POLL_MS / 1000:g} s"


def test_a_recorded_runs_status_feeds_the_badge(tmp_path):
    import accelscope

    with accelscope.profile(tmp_path / "r", mode="light", framework="none") as prof:
        for _ in range(5):
            prof.step()
    assert "5 steps so far" in badge_text(live_status(prof.run_dir))
