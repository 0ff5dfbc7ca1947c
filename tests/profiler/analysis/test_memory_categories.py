"""Memory by category (analysis/memory_categories.py) on real CPU torch runs, against torch's
own memory profiler (``torch.profiler._memory_profiler``, which names categories from tensor
identities and the autograd graph) at the same instant: the categories a trace allows
(activations, gradients, the backward's intermediates, optimizer state) must agree.

torch also names tensors allocated before the profile (parameters, the dataset) from its
graph; a trace cannot, so those are left out of the comparison (they are ``before_trace``
or, on the CPU allocator whose total counts only blocks allocated while profiling, uncounted)."""

from __future__ import annotations

import json
import warnings

import polars as pl
import pytest

from accelscope.analysis import analyze
from accelscope.analysis import memory_live as ML
from accelscope.traces.importer import import_traces
from accelscope.traces.run import Run

torch = pytest.importorskip("torch")
memory_profiler = pytest.importorskip("torch.profiler._memory_profiler")
# torch's timeline columns: 0 unused, then its categories in _CATEGORY_TO_INDEX order, None last
TORCH_NAMES = {"PARAMETER": "parameter", "OPTIMIZER_STATE": "optimizer_state", "INPUT": "input", "TEMPORARY": "temporary",
               "ACTIVATION": "activation", "GRADIENT": "gradient", "AUTOGRAD_DETAIL": "autograd_detail"}


def _record(tmp_path, build, batches: int) -> tuple[Run, list[int], list[dict[str, int]]]:
    """Run ``batches`` training steps of ``build()`` (model, optimizer, loader: made before the
    profile, as in a steady-state capture) under torch.profiler with memory, shapes and stacks;
    return the imported run and torch's category timeline."""
    torch.manual_seed(0)
    from torch.profiler import ProfilerActivity, profile, schedule

    model, opt, loader = build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True,
                     schedule=schedule(wait=0, warmup=0, active=batches + 5)) as prof:
            for i, (xb, yb) in enumerate(loader):
                if i == batches:
                    break
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(xb), yb).backward()
                opt.step()
                prof.step()
        prof.export_chrome_trace(str(tmp_path / "trace.json"))
        times, sizes = memory_profiler.MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline("cpu")
    order = [TORCH_NAMES.get(getattr(c, "name", ""), "unknown") for c in memory_profiler._CATEGORY_TO_INDEX]
    named = [{name: int(row[i + 1]) for i, name in enumerate(order)} for row in sizes]
    run = Run.open(import_traces([tmp_path / "trace.json"], tmp_path / "run", progress=False))
    return run, [int(t) for t in times], named


def _torch_at(times: list[int], named: list[dict[str, int]], unix_us: float) -> dict[str, int]:
    """torch's categories at the last of its instants at or before ``unix_us``."""
    i = max(k for k, t in enumerate(times) if t <= unix_us)
    return named[i]


def _mlp(width: int, depth: int, optimizer, batch: int = 1024) -> tuple:
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 10))
    data = torch.utils.data.TensorDataset(torch.randn(4 * batch, width), torch.randint(0, 10, (4 * batch,)))
    return model, optimizer(model.parameters()), torch.utils.data.DataLoader(data, batch_size=batch)


@pytest.fixture(scope="module")
def sgd(tmp_path_factory):
    """A deep MLP trained with plain SGD: no optimizer state, so the peak is in the backward."""
    return _record(tmp_path_factory.mktemp("sgd"), lambda: _mlp(1024, 6, lambda p: torch.optim.SGD(p, lr=1e-3)), 3)


@pytest.fixture(scope="module")
def adam(tmp_path_factory):
    """An MLP trained with Adam from its first step: the peak is in the step that makes its state."""
    return _record(tmp_path_factory.mktemp("adam"), lambda: _mlp(1024, 2, lambda p: torch.optim.Adam(p, lr=1e-3)), 3)


def _ours(run: Run) -> tuple[dict, dict[str, int]]:
    device = analyze(run).to_dict()["memory"]["devices"][0]
    return device, device["categories_at_peak"]


@pytest.mark.parametrize("category", ["activation", "gradient", "autograd_detail"])
def test_backward_categories_at_the_peak_agree_with_torch(sgd, category):
    run, times, named = sgd
    device, ours = _ours(run)
    theirs = _torch_at(times, named, device["peak_unix_us"])
    assert theirs[category] > 2**20  # the comparison is about megabytes, not empty categories
    assert ours.get(category, 0) == pytest.approx(theirs[category], rel=0.01, abs=64)


@pytest.mark.parametrize("category", ["optimizer_state", "gradient"])
def test_optimizer_state_and_gradients_agree_with_torch(adam, category):
    run, times, named = adam
    device, ours = _ours(run)
    theirs = _torch_at(times, named, device["peak_unix_us"])
    assert theirs[category] > 2**20
    assert ours.get(category, 0) == pytest.approx(theirs[category], rel=0.01, abs=64)


def test_the_categories_add_up_to_the_peak(adam):
    device, ours = _ours(adam[0])
    assert sum(ours.values()) == device["peak_allocated_bytes"]


def test_the_batch_collated_in_the_step_is_an_input(sgd):
    device, ours = _ours(sgd[0])
    batch = 1024 * 1024 * 4 + 1024 * 8  # float32 features and int64 labels
    assert ours["input"] == pytest.approx(batch, rel=0.01)


def test_what_was_live_at_the_peak_names_the_categories_and_ops(sgd):
    run = sgd[0]
    device, ours = _ours(run)
    peak_ns = analyze(run).memory["peak_time_ns"][0]
    live = ML.live_at(run, 0, "cpu", peak_ns, n=1000).rows
    by_category = live.group_by("category").agg(pl.col("live_bytes").sum())
    got = dict(by_category.iter_rows())
    assert got == ours
    assert live.filter(pl.col("category") == "gradient")["op"].drop_nulls().len() > 0


def test_what_was_live_totals_every_row_and_the_rows_left_out(sgd):
    run = sgd[0]
    peak_ns = analyze(run).memory["peak_time_ns"][0]
    every, few = ML.live_at(run, 0, "cpu", peak_ns, n=1000), ML.live_at(run, 0, "cpu", peak_ns, n=3)
    assert every.more_rows == 0 and every.rows.height > 3
    assert few.rows.equals(every.rows.head(3))
    rest = every.rows.slice(3)
    assert (few.more_rows, few.more_bytes, few.more_allocations) == (rest.height, rest["live_bytes"].sum(), rest["allocations"].sum())
    assert few.total_bytes == every.total_bytes == every.rows["live_bytes"].sum()
    assert few.total_allocations == every.total_allocations == every.rows["allocations"].sum()


def test_the_ops_of_the_blocks_read_from_the_runs_one_join_are_those_joined_alone(sgd):
    from accelscope.analysis import memory_ops as MO
    from accelscope.analysis.leaks import ALLOCATION_OPS
    from accelscope.analysis.memory import op_filter

    run = sgd[0]
    ops = run.slices_where(op_filter(run.memory))
    lives = ML.lifetimes(run.memory)
    shared = ML.with_ops(lives, ops, ALLOCATION_OPS, MO.held(run.memory, ops))
    assert shared["op"].drop_nulls().len() > 0
    assert shared.equals(ML.with_ops(lives, ops, ALLOCATION_OPS))


def test_a_trace_without_addresses_has_no_categories(shared_dir, tmp_path):
    rel = "traces/kineto/tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz"
    run = Run.open(import_traces([shared_dir / rel], tmp_path / "run", progress=False))
    if run.memory["addr"].is_not_null().any():
        pytest.skip("this trace records addresses")
    devices = analyze(run).to_dict()["memory"]["devices"]
    assert devices and all(d["categories_at_peak"] is None for d in devices)


def test_json_round_trips(adam):
    document = analyze(adam[0]).to_dict()
    assert json.loads(json.dumps(document))["memory"]["devices"][0]["categories_at_peak"]


def test_the_category_timeline_at_the_peak_holds_the_peak_categories(sgd):
    from accelscope.analysis import memory_categories as MC

    run = sgd[0]
    report = analyze(run)
    peak_ns = report.memory["peak_time_ns"][0]
    row = MC.run_timeline(run).filter(pl.col("time_ns") <= peak_ns).row(-1, named=True)
    assert {c: row[c] for c in MC.CATEGORIES if row[c]} == report.categories_at_peak(0, "cpu")
