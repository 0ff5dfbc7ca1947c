"""The table of trace formats (traces/formats.py): how files are recognised, and that one
entry is all a new format needs to be discovered and imported."""

from __future__ import annotations

import gzip
import json

import pytest

from accelscope.errors import AccelscopeError
from accelscope.traces import formats
from accelscope.traces.importer import TraceImportError, discover, import_traces
from accelscope.traces.run import Run
from accelscope.traces.schema import EVENT_SCHEMA
from tests.builders import event_table


def _toy_read(source: formats.Source, on_bytes) -> formats.RankTrace:
    """A toy format: one line per slice, "start_ns dur_ns name"."""
    rows = [line.split() for line in source.path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    events = event_table([(int(s), int(d), "cpu_op", n) for s, d, n in rows]).to_arrow().cast(EVENT_SCHEMA)
    return formats.RankTrace(source, events, None, 0, "default", {"threads": []})


@pytest.fixture()
def toy_format(monkeypatch):
    toy = formats.TraceFormat("toy", (".toy",), lambda start: start.startswith(b"#toy"), _toy_read)
    monkeypatch.setattr(formats, "FORMATS", [*formats.FORMATS, toy])
    return toy


def test_a_registered_format_is_discovered_and_imported(toy_format, tmp_path):
    d = tmp_path / "traces"
    d.mkdir()
    (d / "a.toy").write_text("#toy\n0 100 matmul\n200 50 relu\n")
    (d / "notes.txt").write_text("not a trace")
    sources, _ = discover([d])
    assert [(s.path.name, s.format) for s in sources] == [("a.toy", "toy")]
    run = Run.open(import_traces([d / "a.toy"], tmp_path / "run", progress=False))
    assert run.events["name"].to_list() == ["matmul", "relu"]


def test_a_file_named_without_a_known_ending_is_recognised_by_its_first_bytes(toy_format, tmp_path):
    f = tmp_path / "trace.bin"
    f.write_text("#toy\n0 100 matmul\n")
    assert discover([f])[0][0].format == "toy"
    g = tmp_path / "kineto.trace"
    g.write_bytes(gzip.compress(json.dumps({"traceEvents": []}).encode()))
    assert formats.format_of(g, sniff=True) == "kineto"


def test_a_file_no_format_claims_is_one_line_naming_it_and_what_was_expected(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    with pytest.raises(TraceImportError) as info:
        discover([f])
    message = str(info.value)
    assert str(f) in message and ".json.gz" in message and ".xplane.pb" in message and "\n" not in message


@pytest.mark.parametrize("name, fmt", [("x.json", "kineto"), ("x.JSON.GZ", "kineto"), ("w.xplane.pb", "xplane"), ("w.xplane.pb.gz", "xplane"), ("x.txt", None)])
def test_file_endings_name_the_format(tmp_path, name, fmt):
    assert formats.format_of(tmp_path / name) == fmt


def test_a_format_registered_for_a_test_is_gone_after_it(tmp_path):
    f = tmp_path / "a.toy"
    f.write_text("#toy\n0 100 matmul\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(formats, "FORMATS", [*formats.FORMATS, formats.TraceFormat("toy", (".toy",), lambda start: start.startswith(b"#toy"), _toy_read)])
        assert discover([f])[0][0].format == "toy"
    with pytest.raises(TraceImportError, match="a.toy: not an accelscope run or a trace file"):
        discover([f])


XPLANE = "xplane/local_cpu_jax0102_steptrace.xplane.pb"


def test_an_xplane_named_without_its_ending_is_recognised_gzipped_or_not(shared_dir, tmp_path):
    data = (shared_dir / XPLANE).read_bytes()
    (tmp_path / "profile.pb").write_bytes(data)
    (tmp_path / "profile.bin").write_bytes(gzip.compress(data))
    assert [discover([tmp_path / n])[0][0].format for n in ("profile.pb", "profile.bin")] == ["xplane", "xplane"]
    run = Run.open(import_traces([tmp_path / "profile.bin"], tmp_path / "run", progress=False))
    assert run.events.height == 78


@pytest.mark.parametrize("content", [b"\nhello world\n", b"\n\n\nnotes", b'"quoted"\n', b"\x0a\x05hello", b"\x89PNG\r\n\x1a\n", b""])
def test_text_and_other_files_are_not_taken_for_an_xplane(tmp_path, content):
    f = tmp_path / "notes.dat"
    f.write_bytes(content)
    with pytest.raises(TraceImportError) as info:
        discover([f])
    assert str(info.value).startswith(f"{f}: not an accelscope run or a trace file")


def test_json_that_begins_with_a_newline_is_kineto(tmp_path):
    f = tmp_path / "trace.txt"
    f.write_text('\n{"traceEvents": []}')
    assert formats.format_of(f, sniff=True) == "kineto"


def test_sniffing_reads_only_the_start_of_a_file(tmp_path):
    data = gzip.compress(b'{"traceEvents": [' + b'{"ph": "X", "name": "k"},' * 100_000 + b"{}]}")
    f = tmp_path / "big.trace"
    f.write_bytes(data[:4096] + b"\x00" * (len(data) - 4096))  # corrupt after the first 4 KiB
    assert formats.format_of(f, sniff=True) == "kineto"


def test_a_mislabelled_file_is_read_by_its_ending_and_its_error_says_what_it_looks_like(shared_dir, tmp_path):
    f = tmp_path / "profile.json"
    f.write_bytes((shared_dir / XPLANE).read_bytes())
    assert discover([f])[0][0].format == "kineto", "the ending decides"
    with pytest.raises(AccelscopeError) as info:
        import_traces([f], tmp_path / "run", progress=False)
    message = str(info.value)
    assert message.startswith(f"{f}: not valid JSON") and message.endswith("its first bytes look like xplane (.xplane.pb, .xplane.pb.gz)")
    assert "\n" not in message and not (tmp_path / "run").exists()
