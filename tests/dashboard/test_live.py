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


def test_a_multi_rank_runs_badge_reads_every_ranks_status(tmp_path):
    from accelscope.traces import ranks

    (tmp_path / ranks.JOB_FILE).write_text(json.dumps({"schema": ranks.JOB_SCHEMA, "key": "k", "world_size": 3}))
    statuses = {0: (120, 0.05, "none", 0), 1: (118, 0.42, "high", 9), 2: (119, 0.10, "none", 1)}
    for rank, (steps, share, verdict, flagged) in statuses.items():
        part = tmp_path / f"rank-{rank}"
        part.mkdir()
        (part / "meta.json").write_text("{}")
        (part / LIVE_FILE).write_text(json.dumps({"steps": steps, "flagged_steps": flagged,
                                                  "recent": {"window": 50, "input_wait_share": share, "verdict": verdict}}))
    text = badge_text(live_status(tmp_path))
    assert "3 ranks" in text and "118 steps so far (the rank furthest behind)" in text
    assert "last 50 steps: input wait 42% on rank 1 (highly input-bound)" in text and "10 steps flagged" in text


def test_a_recorded_multi_rank_runs_status_feeds_the_badge(tmp_path, monkeypatch):
    import accelscope

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_PORT", "1")  # one job's key for both ranks, recorded one after the other here
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        with accelscope.profile(tmp_path / "r", mode="light", framework="none") as prof:
            for _ in range(4 + rank):
                prof.step()
    assert "2 ranks · 4 steps so far" in badge_text(live_status(prof.run_dir))
