import json
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pytest

from accelscope.errors import RunFormatError
from accelscope.traces import run as run_mod
from accelscope.traces.run import Run, RunWriter, unique_run_dir, write_run
from accelscope.traces.schema import COUNTER_SCHEMA, EVENT_SCHEMA, SCHEMA_VERSION


def _event(i: int, kind: str = "cpu_op") -> tuple:
    return (1_000 * i, 500, kind, f"op{i}", "cpu", None, 1, 2, 0, None, None)


def test_rows_round_trip_with_schema(tmp_path):
    w = RunWriter(tmp_path / "r", {"clock": {"name": "unix_epoch_ns"}}, flush_interval_s=3600)
    for i in range(10):
        w.add_event(_event(i))
    w.add_counter(("process_rss_bytes", "cpu", 5, 1.5, 0))
    w.close()
    run = Run.open(tmp_path / "r")
    assert run.events.height == 10
    assert run.events["name"].to_list() == [f"op{i}" for i in range(10)]
    assert run.counters.row(0) == ("process_rss_bytes", "cpu", 5, 1.5, 0)
    assert run.meta["complete"] is True
    assert run.meta["schema_version"] == SCHEMA_VERSION
    assert run.events.to_arrow().schema.names == EVENT_SCHEMA.names


def test_rows_are_flushed_while_recording(tmp_path):
    w = RunWriter(tmp_path / "r", {}, flush_interval_s=0.05)
    w.add_event(_event(1))
    deadline = time.time() + 5
    while time.time() < deadline and not list((tmp_path / "r" / "events").glob("part-*.parquet")):
        time.sleep(0.02)
    assert Run.open(tmp_path / "r").events.height == 1, "rows must reach disk before close()"
    w.close()


def test_fingerprint_changes_with_each_flush_and_at_close_only(tmp_path):
    w = RunWriter(tmp_path / "r", {}, flush_interval_s=3600)
    run = Run.open(tmp_path / "r")
    assert run.live
    before = run.fingerprint()
    assert Run.open(tmp_path / "r").fingerprint() == before, "nothing written: nothing changed"
    w.add_event(_event(1))
    w.flush()
    flushed = run.fingerprint()
    assert flushed != before
    w.close()
    closed = Run.open(tmp_path / "r")
    assert not closed.live and closed.fingerprint() != flushed


def test_close_compacts_parts_into_one_file(tmp_path):
    w = RunWriter(tmp_path / "r", {}, flush_interval_s=3600)
    for i in range(3):
        w.add_event(_event(i))
        w.flush()
    assert len(list((tmp_path / "r" / "events").glob("part-*.parquet"))) == 3
    w.close()
    files = sorted(p.name for p in (tmp_path / "r" / "events").iterdir())
    assert files == ["compacted-000003.parquet"]
    assert Run.open(tmp_path / "r").events.height == 3


def test_parts_covered_by_a_compacted_file_are_not_read_twice(tmp_path):
    w = RunWriter(tmp_path / "r", {}, flush_interval_s=3600)
    for i in range(2):
        w.add_event(_event(i))
        w.flush()
    events = tmp_path / "r" / "events"
    # A crash after writing the merged file but before deleting the parts.
    merged = pa.concat_tables([pa.parquet.read_table(p) for p in sorted(events.glob("part-*"))])
    pa.parquet.write_table(merged, events / "compacted-000002.parquet")
    w.add_event(_event(7))
    w.flush()
    assert sorted(Run.open(tmp_path / "r").events["name"].to_list()) == ["op0", "op1", "op7"]
    w.close()


def test_full_disk_keeps_rows_and_retries(tmp_path, monkeypatch, caplog):
    real = run_mod.write_parquet_atomic
    failures = {"left": 2}

    def flaky(table, path):
        if failures["left"]:
            failures["left"] -= 1
            raise OSError(28, "No space left on device")
        real(table, path)

    monkeypatch.setattr(run_mod, "write_parquet_atomic", flaky)
    w = RunWriter(tmp_path / "r", {}, flush_interval_s=3600)
    w.add_event(_event(1))
    w.flush()  # fails: the row must be kept
    w.add_event(_event(2))
    w.flush()  # fails again
    assert "No space left" in Run.open(tmp_path / "r").meta["write_error"]
    w.close()  # disk is back
    run = Run.open(tmp_path / "r")
    assert sorted(run.events["name"].to_list()) == ["op1", "op2"]
    assert run.meta["complete"] is True
    assert sum("No space left" in r.message for r in caplog.records) == 1, "warn once, not per flush"


def test_a_run_killed_mid_recording_opens_with_what_was_flushed(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, signal, time
        from accelscope.traces.run import Run, RunWriter
        w = RunWriter({str(tmp_path / 'r')!r}, {{}}, flush_interval_s=0.05)
        for i in range(100):
            w.add_event((i * 1000, 10, "step", f"ProfilerStep#{{i}}", "cpu", None, 1, 1, 0, None, None))
        # Killed once the background flush has written them (however slow the machine is).
        deadline = time.monotonic() + 60
        while Run.open({str(tmp_path / 'r')!r}).events.height < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    run = Run.open(tmp_path / "r")
    assert run.meta["complete"] is False
    assert run.events.height == 100


@pytest.mark.parametrize("name", ["exp[1]", "a*b?", "sweep{lr}"])
def test_a_run_whose_path_looks_like_a_glob_reads_its_rows(tmp_path, name):
    w = RunWriter(tmp_path / name, {}, flush_interval_s=3600)
    for i in range(3):
        w.add_event(_event(i))
    w.close()
    run = Run.open(tmp_path / name)
    assert run.events.height == 3 and run.read_warnings == []


def test_damaged_part_is_skipped_with_a_warning(tmp_path):
    write_run(tmp_path / "r", pa.table({c: [] for c in EVENT_SCHEMA.names}, schema=EVENT_SCHEMA), None, {})
    (tmp_path / "r" / "events" / "part-000009.parquet").write_bytes(b"PAR1 garbage")
    run = Run.open(tmp_path / "r")
    assert run.events.height == 0
    assert "part-000009" in run.read_warnings[0] and "\n" not in run.read_warnings[0]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "no such file or directory"),
        (lambda p: p.mkdir(), "empty directory"),
        (lambda p: p.write_text("hello"), "it is a file"),
        (lambda p: (p.mkdir(), (p / "x.txt").write_text("x")), "not an accelscope run"),
        (lambda p: (p.mkdir(), (p / "meta.json").write_text("{not json")), "unreadable run metadata"),
        (lambda p: (p.mkdir(), (p / "meta.json").write_text('{"schema": "other"}')), "not accelscope run metadata"),
        (lambda p: (p.mkdir(), (p / "meta.json").write_text(json.dumps({"schema": "accelscope.run", "schema_version": 99}))), "newer"),
    ],
)
def test_open_rejects_what_is_not_a_run_in_one_line(tmp_path, make, message):
    target = tmp_path / "x"
    make(target)
    with pytest.raises(RunFormatError) as info:
        Run.open(target)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unique_run_dir_never_reuses_a_run(tmp_path):
    assert unique_run_dir(tmp_path / "a") == tmp_path / "a"
    (tmp_path / "a").mkdir()
    assert unique_run_dir(tmp_path / "a") == tmp_path / "a", "an empty directory is free"
    (tmp_path / "a" / "meta.json").write_text("{}")
    assert unique_run_dir(tmp_path / "a") == tmp_path / "a.1"


def test_counter_table_round_trips_nulls(tmp_path):
    counters = pa.table({"name": ["gpu_util_percent"], "device": ["cuda:0"], "time_ns": [1], "value": [None], "rank": [0]}, schema=COUNTER_SCHEMA)
    write_run(tmp_path / "r", None, counters, {})
    assert Run.open(tmp_path / "r").counters["value"].to_list() == [None]
