"""``analyze``'s text at narrow widths: every table fits, names are shortened in the middle,
and columns are left out deliberately, with a caption, never squeezed to "…"."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from accelscope.analysis import analyze
from accelscope.analysis.tables import middle_name
from accelscope.text import name_table, print_report
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run

NW0 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"


@pytest.fixture(scope="module")
def nw0(shared_dir, tmp_path_factory):
    return analyze(Run.open(import_traces([shared_dir / NW0], tmp_path_factory.mktemp("nw0") / "run", progress=False)))


def _render(table, width: int) -> str:
    buf = io.StringIO()
    Console(file=buf, width=width, force_terminal=False).print(table)
    return buf.getvalue()


def test_long_kernel_names_keep_their_start_and_end():
    name = "void cudnn::detail::dgrad_engine<float, 512, 6, 5, 3, 3, 3, false>(int, int, float const*)"
    short = middle_name(name, 30)
    assert len(short) == 30 and short.startswith("cudnn::detail::dgr") and short.endswith("3, false>") and "…" in short


@pytest.mark.parametrize("width", [80, 100, 160])
def test_the_top_device_work_table_fits_with_every_column(nw0, width):
    text = _render(name_table("Top device work", list(nw0.top_kernels.head(10).iter_rows(named=True)), width), width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    header = next(line for line in lines if "name" in line)
    assert all(col in header for col in ("count", "total ms", "mean µs", "% of step")) and "…" not in header
    assert "left out" not in text


def test_a_very_narrow_table_leaves_out_columns_and_says_which(nw0):
    text = _render(name_table("Top device work", list(nw0.top_kernels.head(10).iter_rows(named=True)), 50), 50)
    assert "left out at this width: mean µs" in text and "% of step" in text
    assert max(len(line) for line in text.splitlines()) <= 50


def test_the_whole_report_at_80_columns_never_squeezes_a_header(nw0):
    buf = io.StringIO()
    print_report(nw0, console=Console(file=buf, width=80, force_terminal=False))
    headers = [line for line in buf.getvalue().splitlines() if line.startswith("┃")]
    assert headers and not any("…" in h for h in headers)
