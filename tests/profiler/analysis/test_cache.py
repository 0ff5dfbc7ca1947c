"""The report cached inside a run (analysis/cache.py): served again only while the run, the
code and the signing key are the same; never for a live run; never unpickled unsigned."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import pytest

from accelscope.analysis import analyze
from accelscope.analysis import cache as C
from accelscope.traces.run import META_FILE, Run


@pytest.fixture()
def run_dir(recorded_run, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELSCOPE_CACHE_DIR", str(tmp_path / "user-cache"))
    # The shared fixture's run may hold a cache from other tests: start without one.
    return shutil.copytree(recorded_run, tmp_path / "run", ignore=shutil.ignore_patterns(C.CACHE_DIR))


def _no_analysis(monkeypatch):
    def fail(run, by_rank=None, cluster=None):
        raise AssertionError("analysed again")

    monkeypatch.setattr(C, "analyze", fail)


def _cached(run_dir):
    return sorted(p.name for p in (run_dir / C.CACHE_DIR).glob("report-*.pkl")) if (run_dir / C.CACHE_DIR).is_dir() else []


def test_a_reopened_run_gets_the_same_report_without_analysing_it(run_dir, monkeypatch):
    first = C.analyze_cached(Run.open(run_dir))
    assert len(_cached(run_dir)) == 1
    _no_analysis(monkeypatch)
    again = C.analyze_cached(Run.open(run_dir))
    assert again.to_dict() == first.to_dict() == analyze(Run.open(run_dir)).to_dict()


def test_a_changed_run_is_analysed_again(run_dir, monkeypatch):
    C.analyze_cached(Run.open(run_dir))
    meta = json.loads((run_dir / META_FILE).read_text())
    meta["host"] = "another-host"
    (run_dir / META_FILE).write_text(json.dumps(meta))
    report = C.analyze_cached(Run.open(run_dir))
    assert report.run.host == "another-host" and len(_cached(run_dir)) == 1, "the old report replaced"


def test_other_code_is_analysed_again(run_dir, monkeypatch):
    C.analyze_cached(Run.open(run_dir))
    before = _cached(run_dir)
    monkeypatch.setattr(C, "code_digest", lambda: "another version")
    C.analyze_cached(Run.open(run_dir))
    assert _cached(run_dir) != before


def test_a_live_run_is_never_cached(run_dir):
    meta = json.loads((run_dir / META_FILE).read_text())
    meta["complete"] = False
    (run_dir / META_FILE).write_text(json.dumps(meta))
    C.analyze_cached(Run.open(run_dir))
    assert _cached(run_dir) == []


class _Trap:
    """Unpickling this writes a file: it must never happen to a cache we did not sign."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_cache_not_signed_with_this_users_key_is_never_unpickled(run_dir, tmp_path, monkeypatch):
    C.analyze_cached(Run.open(run_dir))
    (name,) = _cached(run_dir)
    trap = tmp_path / "unpickled"
    forged = os.urandom(32) + pickle.dumps(_Trap(trap))
    (run_dir / C.CACHE_DIR / name).write_bytes(forged)
    report = C.analyze_cached(Run.open(run_dir))
    assert not trap.exists() and report.n_steps > 0
    monkeypatch.setenv("ACCELSCOPE_CACHE_DIR", str(tmp_path / "someone-else"))
    _no_analysis(monkeypatch)
    with pytest.raises(AssertionError, match="analysed again"):
        C.analyze_cached(Run.open(run_dir))


def test_a_read_only_run_is_analysed_without_a_cache(run_dir):
    for d in (run_dir, *[p for p in run_dir.rglob("*") if p.is_dir()]):
        d.chmod(0o555)
    try:
        if os.access(run_dir, os.W_OK):
            pytest.skip("running as root: a read-only directory is still writable")
        assert C.analyze_cached(Run.open(run_dir)).n_steps > 0 and _cached(run_dir) == []
    finally:
        for d in (run_dir, *[p for p in run_dir.rglob("*") if p.is_dir()]):
            d.chmod(0o755)


def test_a_moved_run_keeps_its_cache_under_its_new_name(run_dir, tmp_path, monkeypatch):
    C.analyze_cached(Run.open(run_dir))
    moved = shutil.move(run_dir, tmp_path / "renamed")
    _no_analysis(monkeypatch)
    report = C.analyze_cached(Run.open(moved))
    assert report.run.name == "renamed" and report.run.path == str(moved)


def test_large_tables_are_kept_beside_the_report_and_read_back_the_same(run_dir, monkeypatch):
    monkeypatch.setattr(C, "SIDE_MIN_ROWS", 10)  # the recorded run's tables are small: put them beside it too
    first = C.analyze_cached(Run.open(run_dir))
    sides = sorted((run_dir / C.CACHE_DIR).glob("report-*.arrow"))
    assert sides, "the large tables went beside the pickle"
    _no_analysis(monkeypatch)
    again = C.analyze_cached(Run.open(run_dir))
    assert again.to_dict() == first.to_dict()
    assert again.gaps.equals(first.gaps) and again.steps.equals(first.steps)


def test_a_side_table_that_changed_is_not_trusted(run_dir, monkeypatch):
    monkeypatch.setattr(C, "SIDE_MIN_ROWS", 10)
    C.analyze_cached(Run.open(run_dir))
    side = sorted((run_dir / C.CACHE_DIR).glob("report-*.arrow"))[0]
    side.write_bytes(side.read_bytes() + b"\0")
    _no_analysis(monkeypatch)
    with pytest.raises(AssertionError, match="analysed again"):
        C.analyze_cached(Run.open(run_dir))


def test_a_new_key_drops_the_old_side_tables(run_dir, monkeypatch):
    monkeypatch.setattr(C, "SIDE_MIN_ROWS", 10)
    C.analyze_cached(Run.open(run_dir))
    old = {p.name for p in (run_dir / C.CACHE_DIR).glob("report-*")}
    meta = json.loads((run_dir / META_FILE).read_text())
    meta["note"] = "changed"
    (run_dir / META_FILE).write_text(json.dumps(meta))
    C.analyze_cached(Run.open(run_dir))
    now = {p.name for p in (run_dir / C.CACHE_DIR).glob("report-*")}
    assert now and not (now & old), "only the new key's files are left"
