"""docs/cli.md documents the JSON documents of ``analyze --json`` and ``diff --json`` key by
key; these tests hold the documentation and the documents to each other, both ways, on
real traces (the V100 ResNet-50 pair: num_workers 0 and 4)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from accelscope.analysis import analyze
from accelscope.analysis.breakdown import BREAKDOWN
from accelscope.analysis.causes import CAUSES
from accelscope.analysis.compare import compare
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run
from tests.jobs.launch import LOADER_2

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
NW4 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_4/worker0.1623212756351.pt.trace.json.gz"
PLACEHOLDERS = {"<category>": BREAKDOWN, "<cause>": CAUSES}


def documented(name: str) -> set[str]:
    """The keys of the table between ``<!-- schema:NAME -->`` and ``<!-- /schema -->``, with
    ``<category>``/``<cause>`` expanded."""
    text = DOC.read_text(encoding="utf-8")
    block = re.search(rf"<!-- schema:{name} -->(.*?)<!-- /schema -->", text, re.S)
    assert block, f"docs/cli.md has no schema:{name} table"
    keys = set()
    for key in re.findall(r"^\| `([^`]+)` \|", block.group(1), re.M):
        expanded = [key]
        for placeholder, values in PLACEHOLDERS.items():
            expanded = [k.replace(placeholder, v) for k in expanded for v in values] if placeholder in key else expanded
        keys.update(expanded)
    return keys


# Maps keyed by figure names, documented as a whole (their keys are other documented keys).
OPAQUE = {"unknown", "memory.devices[].categories_at_peak"}


def paths(doc: Any, prefix: str = "") -> set[str]:
    """Every key path of a JSON document: ``a.b``, lists as ``a[]`` (their first item)."""
    out = set()
    if isinstance(doc, dict):
        for k, v in doc.items():
            p = f"{prefix}.{k}" if prefix else k
            out.add(p)
            if p not in OPAQUE:
                out |= paths(v, p)
    elif isinstance(doc, list) and doc and isinstance(doc[0], dict):
        out |= paths(doc[0], prefix + "[]")
    return out


def _parents(keys: set[str]) -> set[str]:
    """Each key with every prefix of it (``a.b.c`` documents ``a`` and ``a.b`` too)."""
    out = set()
    for k in keys:
        parts = k.split(".")
        out.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return out


@pytest.fixture(scope="module")
def reports(shared_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("docs")
    return [analyze(Run.open(import_traces([shared_dir / p], out / n, progress=False))) for n, p in (("nw0", NW0), ("nw4", NW4))]


@pytest.fixture(scope="module")
def straggler_report(ddp_job):
    """A recorded 2-rank DDP job whose rank 1 sleeps in its loader: ranks and a straggler."""
    return analyze(Run.open(ddp_job(*LOADER_2) / "ddp"))


def test_every_key_of_analyze_json_is_documented_and_every_documented_key_is_there(reports, straggler_report):
    keys = documented("analyze")
    found = paths(reports[0].to_dict()) | paths(straggler_report.to_dict())
    missing_from_doc = found - _parents(keys)
    assert not missing_from_doc, f"in analyze --json, not in docs/cli.md: {sorted(missing_from_doc)}"
    # (a key inside a list that is empty in these reports, e.g. a cause's host_ops, is there
    # when the list is)
    absent = {k for k in keys if k not in found and not ("[]" in k and k.split("[]")[0] in found)}
    assert not absent, f"in docs/cli.md, not in analyze --json: {sorted(absent)}"


def test_every_key_of_diff_json_is_documented_and_every_documented_key_is_there(reports):
    keys = documented("diff")
    doc = compare(*reports).to_dict()
    missing_from_doc = paths(doc) - _parents(keys)
    assert not missing_from_doc, f"in diff --json, not in docs/cli.md: {sorted(missing_from_doc)}"
    # Categories and causes that neither run has are left out of a comparison: check the others.
    present = {k for k in keys if not any(f".{v}." in k for vs in PLACEHOLDERS.values() for v in vs)}
    present |= {k for k in keys if k in paths(doc)}
    absent = {k for k in present if k not in paths(doc)}
    assert not absent, f"in docs/cli.md, not in diff --json: {sorted(absent)}"


def test_every_time_in_the_documents_is_in_microseconds(reports):
    for doc in (reports[0].to_dict(), compare(*reports).to_dict()):
        units = {k.rsplit(".", 1)[-1] for k in paths(doc)}
        assert not {u for u in units if u.endswith(("_ms", "_ns", "_s"))}, "one time unit in JSON: µs"
