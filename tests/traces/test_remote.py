"""Traces named by fsspec URL (traces/remote.py), without a cluster: listed, imported and
cached like paths; a missing URL or an unknown scheme is one line."""

from __future__ import annotations

import pytest

pytest.importorskip("fsspec", reason="the cluster extra (fsspec) is not installed")

from accelscope.errors import AccelscopeError  # noqa: E402
from accelscope.traces import remote  # noqa: E402
from accelscope.traces.importer import import_traces, resolve_run  # noqa: E402
from accelscope.traces.run import Run  # noqa: E402

DLRM = "traces/more/param-dlrm-8rank"
NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
KEY = ["rank", "start_ns", "dur_ns", "kind", "name", "device", "stream", "pid", "tid"]


def test_a_directory_url_lists_its_trace_files(shared_dir):
    found = remote.discover_url((shared_dir / DLRM).as_uri())
    files = sorted(f.name for f in (shared_dir / DLRM).iterdir() if f.name.endswith(".json.gz"))
    assert sorted(s.path.name for s in found) == files
    assert all(s.url.startswith("file://") and s.from_directory and s.size_bytes > 0 for s in found)


def test_a_file_url_imports_the_same_run_as_its_path(shared_dir, tmp_path):
    by_url = Run.open(import_traces([(shared_dir / NW0).as_uri()], tmp_path / "u", progress=False))
    by_path = Run.open(import_traces([shared_dir / NW0], tmp_path / "p", progress=False))
    assert by_url.events.sort(KEY).equals(by_path.events.sort(KEY))
    assert by_url.meta["sources"][0]["path"] == (shared_dir / NW0).as_uri()


def test_a_url_imported_on_the_fly_is_cached_and_reused(shared_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    url = (shared_dir / DLRM).as_uri()
    seen = []
    first = resolve_run(url, progress=False, on_import=lambda src, dest: seen.append(src))
    assert seen == [url] and first.parent == tmp_path / "cache"
    again = resolve_run(url, progress=False, on_import=lambda src, dest: seen.append(src))
    assert again == first and seen == [url], "reused, not imported again"
    assert Run.open(first).meta["ranks"] == list(range(8))


@pytest.mark.parametrize("url, says", [("memory://accelscope-none/x.json", "no such file or directory"),
                                       ("nosuch://a/b.json", "nosuch")])
def test_a_bad_url_is_one_line(tmp_path, url, says):
    with pytest.raises(AccelscopeError, match=says) as err:
        import_traces([url], tmp_path / "r", progress=False)
    assert "\n" not in str(err.value) and url.split("/")[0] in str(err.value)
    assert not (tmp_path / "r").exists()
