"""The table of trace formats (traces/formats.py): how files are recognised, and that one
entry is all a new format needs to be discovered and imported."""

from __future__ import annotations

import gzip
import json

import pytest

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
