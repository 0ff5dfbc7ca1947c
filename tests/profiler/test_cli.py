import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from accelscope.analysis import analyze
from accelscope.cli import main
from accelscope.traces.run import Run
from tests.jobs.launch import LOADER_2, NONE_2, truth_wait_shares, truths


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "accelscope", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "setup, expected",
    [
        (lambda p: None, "no such file or directory"),
        (lambda p: p.mkdir(), "empty directory"),
        (lambda p: p.write_text("not a run"), "not an accelscope run or a trace file"),
        (lambda p: (p.mkdir(), (p / "notes.txt").write_text("x")), "not an accelscope run, and no trace files"),
    ],
)
def test_analyze_bad_input_is_one_line_and_exit_2(tmp_path, setup, expected):
    target = tmp_path / "thing"
    setup(target)
    proc = _cli("analyze", str(target))
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and str(target) in lines[0]


def test_analyze_json_matches_the_analysis(recorded_run, capsys):
    assert main(["analyze", str(recorded_run), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    report = analyze(Run.open(recorded_run))
    assert doc["verdict"] == report.verdict in ("high", "moderate", "none")
    assert doc["input_wait_share"] == pytest.approx(report.input_wait_share, abs=1e-6)
    assert doc["step_count"] == len(doc["steps"]) == 14
    assert {"name", "dur_us", "input_wait_share", "input_wait_us", "verdict"} <= set(doc["steps"][3])


def test_analyze_text_report_names_the_verdict(recorded_run, capsys):
    assert main(["analyze", str(recorded_run)]) == 0
    out = capsys.readouterr().out
    assert "input-bound" in out and "14 steps" in out


def test_export_writes_gzip_by_suffix_and_refuses_to_overwrite(recorded_run, tmp_path, capsys):
    out = tmp_path / "t.json.gz"
    assert main(["export", str(recorded_run), "-o", str(out)]) == 0
    doc = json.loads(gzip.decompress(out.read_bytes()))
    assert doc["traceEvents"]
    assert main(["export", str(recorded_run), "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", str(recorded_run), "-o", str(tmp_path / "t.txt")]) == 2


def test_dashboard_rejects_a_missing_run_before_serving(tmp_path):
    proc = _cli("dashboard", str(tmp_path / "nope"), "--port", "0")
    assert proc.returncode == 2 and "no such file" in proc.stderr and "http://" not in proc.stdout


def test_demo_rejects_bad_options(tmp_path):
    proc = _cli("demo", "--steps", "0", "--no-serve", "--out-dir", str(tmp_path))
    assert proc.returncode == 2 and "--steps" in proc.stderr


def test_fail_if_gates_exit_1_and_name_the_gate(recorded_run):
    proc = _cli("analyze", str(recorded_run), "--json", "--fail-if", "input_wait_share>0.05", "mean_step_us>1e12")
    assert proc.returncode == 1
    assert "gate failed: input_wait_share" in proc.stderr and "mean_step_us" not in proc.stderr
    assert json.loads(proc.stdout)["verdict"] in ("high", "moderate")
    assert _cli("analyze", str(recorded_run), "--fail-if", "input_wait_share>0.99").returncode == 0


@pytest.mark.parametrize("gate, message", [("input_wait_share>>1", "expected METRIC OP NUMBER"), ("nope>1", "no metric"), ("verdict>1", "not a number")])
def test_bad_gates_are_usage_errors(recorded_run, gate, message):
    proc = _cli("analyze", str(recorded_run), "--fail-if", gate)
    assert proc.returncode == 2 and message in proc.stderr


def test_export_per_rank_writes_one_file_per_rank(recorded_run, tmp_path):
    proc = _cli("export", str(recorded_run), "--per-rank", "-o", str(tmp_path / "ranks"))
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in (tmp_path / "ranks").iterdir()] == ["rank-0.json.gz"]


def test_a_long_run_prints_its_slowest_steps_slowest_first(tmp_path):
    import time

    from rich.console import Console

    import accelscope
    from accelscope.text import print_report

    with accelscope.profile(tmp_path / "r", mode="light", framework="none", live=False) as prof:
        for i in range(26):
            time.sleep(0.03 if i in (5, 17) else 0.002)
            prof.step()
    report = analyze(Run.open(prof.run_dir))
    console = Console(record=True, width=120)
    print_report(report, console)
    text = console.export_text()
    assert "Steps (the 20 slowest, slowest first)" in text
    block = text.split("Steps (the 20 slowest, slowest first)")[1]
    shown = [float(line.split("│")[3]) for line in block.splitlines() if line.count("│") >= 6][:20]
    assert shown == sorted(shown, reverse=True) and len(shown) == 20


def test_analyze_prints_the_ranks_and_names_the_straggler(ddp_job, capsys):
    run = ddp_job(*LOADER_2) / "ddp"
    assert main(["analyze", str(run)]) == 0
    out = capsys.readouterr().out
    assert "straggler: rank 1 arrives last" in " ".join(out.split())
    assert "Ranks" in out and "(straggler)" in out


def test_analyze_json_has_ranks_and_stragglers(ddp_job, capsys):
    assert main(["analyze", str(ddp_job(*LOADER_2) / "ddp"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in doc["ranks"]] == [0, 1]
    assert doc["stragglers"][0]["rank"] == 1 and doc["stragglers"][0]["cause"] == "input_wait"
    assert doc["straggler_share"] == doc["stragglers"][0]["share_of_step"]


def test_a_straggler_gate_fails_the_job_with_a_straggler_only(ddp_job):
    assert _cli("analyze", str(ddp_job(*LOADER_2) / "ddp"), "--fail-if", "straggler_share>0.1").returncode == 1
    # Without an injection the ranks only wait for each other's noise; a machine loaded by
    # other jobs can make one rank late for real, so the gate sits above what the job's own
    # timestamps measured (and at 15 % on a quiet machine).
    none = ddp_job(*NONE_2)
    steps = set(analyze(Run.open(none / "ddp")).steps.filter("analysed")["step"].to_list())
    limit = max(0.15, max(truth_wait_shares(truths(none), steps).values()) + 0.05)
    assert _cli("analyze", str(none / "ddp"), "--fail-if", f"straggler_share>{limit:.3f}").returncode == 0


def test_bare_import_reaches_keras_without_importing_tensorflow():
    code = (
        "import sys, accelscope; "
        "assert 'tensorflow' not in sys.modules; "
        "m = accelscope.keras; "
        "assert m.__name__ == 'accelscope.keras', m; "
        "assert 'ProfileCallback' in vars(m)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_dashboard_rejects_an_out_of_range_port_in_one_line(recorded_run):
    proc = _cli("dashboard", str(recorded_run), "--port", "99999")
    assert proc.returncode == 2 and "http://" not in proc.stdout
    assert proc.stderr.strip().count("\n") == 0 and "99999" in proc.stderr


def test_dashboard_rejects_a_port_in_use_in_one_line(recorded_run):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = _cli("dashboard", str(recorded_run), "--port", str(busy.getsockname()[1]))
    assert proc.returncode == 2 and "http://" not in proc.stdout and "Dash is running" not in proc.stdout
    assert proc.stderr.strip().count("\n") == 0 and "cannot serve" in proc.stderr


def test_dashboard_without_the_extra_says_so_before_any_url(recorded_run):
    code = (
        "import sys; sys.modules['dash'] = None; from accelscope.cli import main; "
        f"sys.exit(main(['dashboard', {str(recorded_run)!r}, '--port', '0']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "dashboard" in proc.stderr


def _trace_filter(shared_dir, tmp_path):
    """A writable copy of HTA's two-rank trace_filter directory (the cache goes beside it)."""
    import shutil

    return Path(shutil.copytree(shared_dir / "traces/HolisticTraceAnalysis/tests/data/trace_filter", tmp_path / "trace_filter"))


def test_an_imported_directory_is_named_after_the_directory(shared_dir, tmp_path, capsys):
    src = _trace_filter(shared_dir, tmp_path)
    assert main(["analyze", str(src), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"] == "trace_filter"


def test_an_imported_file_is_named_without_its_trace_endings(shared_dir, tmp_path, capsys):
    src = _trace_filter(shared_dir, tmp_path) / "sampled_rank-0.json.gz"
    assert main(["analyze", str(src), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"] == "sampled_rank-0"


def test_dashboard_on_port_0_prints_the_port_it_serves_and_nothing_else(recorded_run):
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "accelscope", "dashboard", str(recorded_run), "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("dashboard: http://127.0.0.1:") and ":0/" not in line, line
        url = line.split()[1]
        with urllib.request.urlopen(url, timeout=60) as page:
            assert page.status == 200 and b"accelscope" in page.read()
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    assert out == "" and "Dash is running" not in err and "Serving Flask app" not in err


def test_export_carries_the_idle_gap_track_unless_told_not_to(recorded_run, tmp_path):
    from accelscope.traces.chrome import GAP_TRACK
    from accelscope.traces.kineto import GAP_CATEGORY

    def gap_track(*options):
        out = tmp_path / f"t{len(options)}.json"
        assert main(["export", str(recorded_run), "-o", str(out), *options]) == 0
        events = json.loads(out.read_text())["traceEvents"]
        return [e for e in events if e.get("cat") == GAP_CATEGORY], [e for e in events if e["ph"] == "M" and e["args"].get("name") == GAP_TRACK]

    gaps, track = gap_track()
    assert len(gaps) == analyze(Run.open(recorded_run)).gaps.height > 0 and len(track) == 1
    assert gap_track("--no-gaps") == ([], [])
