"""Allocation sites from recorded stacks (profiler/analysis/memory_sites.py): what memory by
op and the peak's op say for a run whose allocator events no host op holds (a snapshot)."""

from __future__ import annotations

import polars as pl

from accelscope.analysis import memory_sites
from accelscope.analysis.memory_ops import MEMORY_OPS_SCHEMA, held, table

TRAIN = "/work/train.py:42 forward"
LOOP = "/work/train.py:90 main"
TORCH = "/venv/site-packages/torch/nn/modules/module.py:1747 _call_impl"
BACKWARD = "??:0 at::_ops::neg::call\n??:0 torch::autograd::generated::SubBackward0::apply\n??:0 torch::autograd::Engine::thread_main"
ATEN = "??:0 c10::cuda::malloc\n??:0 at::_ops::ne_Tensor::call"


def _memory(stacks: list[str | None], sizes: list[int]) -> pl.DataFrame:
    n = len(sizes)
    return pl.DataFrame({"time_ns": list(range(n)), "device": ["cuda:0"] * n, "bytes": sizes, "pid": [None] * n, "tid": [None] * n,
                         "rank": [0] * n, "stack": stacks}, schema_overrides={"rank": pl.Int32, "pid": pl.Int64, "tid": pl.Int64, "stack": pl.String})


def test_a_site_is_the_innermost_python_frame_outside_torch():
    stacks = pl.Series([f"{TORCH}\n{TRAIN}\n{LOOP}", TORCH, BACKWARD, ATEN, None])
    got = pl.select(memory_sites.site(pl.lit(stacks))).to_series().to_list()
    assert got == ["train.py:42 forward", "module.py:1747 _call_impl", "SubBackward0", "aten::ne_Tensor", None]


def test_memory_by_site_has_self_for_the_site_and_total_for_every_python_frame():
    mem = _memory([f"{TORCH}\n{TRAIN}\n{LOOP}", f"{TRAIN}\n{LOOP}", LOOP, BACKWARD, None], [100, -40, 7, 5, 1000])
    no_ops = pl.DataFrame(schema={"kind": pl.String, "rank": pl.Int32, "pid": pl.Int64, "tid": pl.Int64, "name": pl.String, "start_ns": pl.Int64,
                                  "dur_ns": pl.Int64})
    got = {r["name"]: r for r in table(mem, held(mem, no_ops)).iter_rows(named=True)}
    assert set(got) == {"train.py:42 forward", "train.py:90 main", "module.py:1747 _call_impl", "SubBackward0"}  # the stackless row has no site
    fwd, main = got["train.py:42 forward"], got["train.py:90 main"]
    assert (fwd["allocations"], fwd["allocated_bytes"], fwd["self_increase_bytes"], fwd["total_allocated_bytes"]) == (1, 100, 60, 100)
    assert (main["allocations"], main["allocated_bytes"], main["total_allocated_bytes"], main["total_increase_bytes"]) == (1, 7, 107, 67)
    assert got["module.py:1747 _call_impl"]["allocated_bytes"] == 0 and got["module.py:1747 _call_impl"]["total_allocated_bytes"] == 100
    assert got["SubBackward0"]["allocated_bytes"] == 5


def test_no_stacks_no_sites():
    mem = _memory([None, None], [1, -1]).drop("stack")
    assert memory_sites.table(mem, MEMORY_OPS_SCHEMA).height == 0
