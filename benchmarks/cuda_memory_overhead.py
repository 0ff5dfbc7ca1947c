"""What light mode's per-step CUDA memory read costs the training thread, on a CPU machine.

No GPU here: ``torch.cuda``'s allocator functions are replaced by the tests' fake
(tests/cuda_fake.py), which returns a nested dict of the real one's size (9 statistics x 3
pools x 4 fields and the scalars, built fresh at each call, as torch builds it from C++),
so what is timed is accelscope's own path: the read, four counter rows, the peak reset. The
real ``torch._C._cuda_memoryStats`` on a GPU is not measured.

Three figures:

* ``prof.step()`` alone in a tight loop, light mode with and without the collector: the
  sampling's cost per step in µs (rounds interleaved, medians);
* the same ~10 ms CPU training step as benchmarks/overhead.py, bare, under light mode
  without the collector (the fake not installed: the registry's probe leaves it out) and
  with it: the ratios the issue's target is about (<= 1.02 of bare);
* one read through the door (one nested dict) against torch's public trio
  ``memory_allocated`` + ``memory_reserved`` + ``max_memory_allocated`` (each flattens and
  sorts the whole dict): why the door reads the nested dict.

    python benchmarks/cuda_memory_overhead.py [--rounds 7] [--steps 200]
    python benchmarks/cuda_memory_overhead.py --only light+cuda --tight 200000   # one tight loop, for whole-process timing
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from overhead import batches, make_loop  # noqa: E402

import accelscope  # noqa: E402
from tests.cuda_fake import FakeCudaAllocator  # noqa: E402

STATS = ("allocation", "segment", "active", "inactive_split", "allocated_bytes", "reserved_bytes", "active_bytes",
         "inactive_split_bytes", "requested_bytes")


class RealSizedFake(FakeCudaAllocator):
    """The fake, its statistics dict the size and shape of torch 2.x's."""

    def memory_stats_as_nested_dict(self, device=None):
        base = super().memory_stats_as_nested_dict(device)
        self.reads.clear()  # a benchmark reads millions of times: keep no log
        out = {s: {p: {"current": 0, "peak": 0, "allocated": 0, "freed": 0} for p in ("all", "small_pool", "large_pool")} for s in STATS}
        out["allocated_bytes"]["all"].update(base["allocated_bytes"]["all"])
        out["reserved_bytes"]["all"].update(base["reserved_bytes"]["all"])
        out.update(num_alloc_retries=0, num_ooms=0, num_sync_all_streams=0, num_device_alloc=0, num_device_free=0, max_split_size=-1,
                   oversize_allocations={"current": 0, "peak": 0, "allocated": 0, "freed": 0},
                   oversize_segments={"current": 0, "peak": 0, "allocated": 0, "freed": 0})
        return out

    def reset_peak_memory_stats(self, device=None):
        self.peak_allocated, self.peak_reserved = self.allocated, self.reserved


class Cuda:
    """The fake installed while inside (``on``), the real CPU torch.cuda otherwise."""

    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        self.mp = pytest.MonkeyPatch()
        if self.on:
            fake = RealSizedFake()
            fake.allocate(64 * 2**20)
            fake.install(self.mp, torch.cuda)
            self.mp.setattr(torch.cuda.memory, "memory_stats_as_nested_dict", fake.memory_stats_as_nested_dict)
        return self

    def __exit__(self, *exc):
        self.mp.undo()


def steps_only(out: Path, n: int, cuda: bool) -> float:
    """µs per ``prof.step()`` with nothing else in the loop."""
    with Cuda(cuda), accelscope.profile(out / f"s-{time.perf_counter_ns()}", mode="light", framework="torch") as prof:
        assert any(c.name == "cuda_memory" for c in prof._step_collectors) == cuda
        t = time.perf_counter()
        for _ in range(n):
            prof.step()
        return (time.perf_counter() - t) / n * 1e6


def training(out: Path, data, step, n: int, how: str) -> float:
    """ms per training step: bare, light mode, or light mode with the CUDA memory read."""
    if how == "bare":
        t = time.perf_counter()
        for x, y in batches(data, n):
            step(x, y)
        return (time.perf_counter() - t) / n * 1e3
    with Cuda(how == "light+cuda"), accelscope.profile(out / f"t-{time.perf_counter_ns()}", mode="light", framework="torch") as prof:
        t = time.perf_counter()
        for x, y in prof.iter(batches(data, n)):
            step(x, y)
            prof.step()
        return (time.perf_counter() - t) / n * 1e3


def reads(n: int) -> tuple[float, float]:
    """µs per read: the door's one nested dict (with the reset), torch's public trio (with the reset)."""
    from accelscope.collectors.cuda_memory import CudaMemory

    with Cuda(True):
        door = CudaMemory()
        t = time.perf_counter()
        for _ in range(n):
            door.read(0)
            door.reset_peak(0)
        one = (time.perf_counter() - t) / n * 1e6
        cuda = torch.cuda
        t = time.perf_counter()
        for _ in range(n):
            cuda.memory_allocated(0), cuda.memory_reserved(0), cuda.max_memory_allocated(0)
            cuda.reset_peak_memory_stats(0)
        trio = (time.perf_counter() - t) / n * 1e6
    return one, trio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=200, help="training steps per round (~10 ms each)")
    ap.add_argument("--tight", type=int, default=20000, help="prof.step() calls per round of the tight loop")
    ap.add_argument("--only", choices=("light", "light+cuda"), help="run one tight loop of --tight calls and nothing else")
    args = ap.parse_args()
    if args.only:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"{steps_only(Path(tmp), args.tight, args.only == 'light+cuda'):.2f} µs per prof.step()")
        return
    torch.set_num_threads(1)
    data, step, batch = make_loop()
    tight = {False: [], True: []}
    train = {"bare": [], "light": [], "light+cuda": []}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        steps_only(out, 1000, True), training(out, data, step, 20, "light+cuda")  # warm-up
        for r in range(args.rounds):
            for cuda in (False, True):
                tight[cuda].append(steps_only(out, args.tight, cuda))
            for how in train:
                train[how].append(training(out, data, step, args.steps, how))
            print(f"round {r + 1}/{args.rounds}: step() {tight[False][-1]:.2f} / {tight[True][-1]:.2f} µs, training "
                  + " / ".join(f"{v[-1]:.3f}" for v in train.values()) + " ms (bare / light / light+cuda)", flush=True)
    one, trio = reads(20000)
    no, yes = statistics.median(tight[False]), statistics.median(tight[True])
    bare, light, cuda = (statistics.median(train[k]) for k in ("bare", "light", "light+cuda"))

    def spread(a: str, b: str) -> str:
        r = sorted(y / x for x, y in zip(train[a], train[b]))
        return f"per-round {r[0]:.4f} .. {r[-1]:.4f}"

    print(f"\nprof.step(), light mode: {no:.2f} µs without the CUDA memory read, {yes:.2f} µs with it: +{yes - no:.2f} µs per step")
    print(f"  = {(yes - no) / (bare * 1e3):.4%} of this machine's {bare:.2f} ms training step")
    print(f"training step (batch {batch}), medians: bare {bare:.3f} ms, light {light:.3f} ms, light + CUDA memory {cuda:.3f} ms")
    print(f"  light + CUDA memory / bare  = {cuda / bare:.4f} ({spread('bare', 'light+cuda')}; target <= 1.02)")
    print(f"  light / bare                = {light / bare:.4f} ({spread('bare', 'light')})")
    print(f"  light + CUDA memory / light = {cuda / light:.4f} ({spread('light', 'light+cuda')})")
    print(f"one read + reset: {one:.2f} µs through the door (one nested dict), {trio:.2f} µs through torch's public trio")


if __name__ == "__main__":
    main()
