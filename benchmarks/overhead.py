"""Overhead of accelscope on a CPU training loop with ~10 ms steps.

Runs the same loop bare, under accelscope light mode (host sampling, step and input
timing, live analysis), the same without live analysis, under full mode (plus torch.profiler windows, allocator
events on), full mode with ``profile_memory=False``, and under bare torch.profiler with the same schedule; rounds are interleaved so machine noise hits every variant
alike. Prints the median per-step time of each inside its loop (steady state) and the
ratios, and the one-off start-up + shutdown cost of a profiled run apart. Targets: light <= 1.02x
bare; full <= 1.10x bare torch.profiler.

    python benchmarks/overhead.py [--steps 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import accelscope
from accelscope.schedule import Schedule

SCHEDULE = Schedule()  # the default: what users get


def make_loop(target_ms: float = 10.0):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    batch = 64

    def calibrate() -> int:
        x = torch.randn(batch, 512)
        for _ in range(3):
            model(x).sum().backward()
        t = time.perf_counter()
        for _ in range(10):
            opt.zero_grad()
            loss_fn(model(x), torch.zeros(batch, dtype=torch.long)).backward()
            opt.step()
        per = (time.perf_counter() - t) / 10
        return max(batch, int(batch * target_ms / 1000 / per))

    batch = calibrate()
    data = [(torch.randn(batch, 512), torch.randint(0, 10, (batch,))) for _ in range(8)]

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return data, step, batch


def batches(data, steps):
    for i in range(steps):
        yield data[i % len(data)]


def run_bare(data, step, steps, out):
    t = time.perf_counter()
    for x, y in batches(data, steps):
        step(x, y)
    return (time.perf_counter() - t) / steps


FIXED_COST_S: dict[str, list[float]] = {}


def run_accelscope(mode, live=True, profile_memory=True):
    """Per-step time inside the profiled loop; start-up and shutdown are recorded apart."""
    def run(data, step, steps, out):
        t0 = time.perf_counter()
        with accelscope.profile(out / f"{mode}-{time.perf_counter_ns()}", mode=mode, schedule=SCHEDULE, live=live,
                                profile_memory=profile_memory) as prof:
            t1 = time.perf_counter()
            for x, y in prof.iter(batches(data, steps)):
                step(x, y)
                prof.step()
            t2 = time.perf_counter()
        t3 = time.perf_counter()
        FIXED_COST_S.setdefault(f"{mode}{'' if live else ', no live'}{'' if profile_memory else ', no memory'}", []).append((t1 - t0) + (t3 - t2))
        return (t2 - t1) / steps

    return run


def run_torch_profiler(data, step, steps, out):
    from torch.profiler import ProfilerAction, ProfilerActivity, profile

    to_torch = {a: getattr(ProfilerAction, a.name) for a in type(SCHEDULE(0))}
    counter = [0]

    def ready(p):
        p.export_chrome_trace(str(out / f"tp-{time.perf_counter_ns()}-{counter[0]}.json"))
        counter[0] += 1

    with profile(activities=[ProfilerActivity.CPU], schedule=lambda s: to_torch[SCHEDULE(s)], on_trace_ready=ready) as p:
        t = time.perf_counter()
        for x, y in batches(data, steps):
            step(x, y)
            p.step()
        dt = time.perf_counter() - t
    return dt / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 keeps timings steady)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data, step, batch = make_loop()
    variants = {
        "bare": run_bare,
        "light": run_accelscope("light"),
        "light, no live": run_accelscope("light", live=False),
        "full": run_accelscope("full"),
        "full, no memory": run_accelscope("full", profile_memory=False),
        "torch.profiler": run_torch_profiler,
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for fn in variants.values():  # warm-up: allocator, Kineto initialisation
            fn(data, step, 20, out)
        for r in range(args.rounds):
            for name, fn in variants.items():
                times[name].append(fn(data, step, args.steps, out))
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1] * 1e3:.2f} ms" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nCPU loop, batch {batch}, {args.steps} steps x {args.rounds} interleaved rounds, torch threads {args.threads}")
    for k, v in med.items():
        print(f"  {k:15s} median step {v * 1e3:7.3f} ms")
    for k, v in FIXED_COST_S.items():
        print(f"  {k:15s} start + stop {statistics.median(v) * 1e3:7.1f} ms once per run (threads, first flush, compaction)")
    print(f"  light / bare            = {med['light'] / med['bare']:.4f}   (target <= 1.02)")
    print(f"  light / light, no live  = {med['light'] / med['light, no live']:.4f}   (live analyzer; target <= 1.01)")
    print(f"  full  / bare            = {med['full'] / med['bare']:.4f}")
    print(f"  full  / torch.profiler  = {med['full'] / med['torch.profiler']:.4f}   (target <= 1.10)")
    print(f"  full  / full, no memory = {med['full'] / med['full, no memory']:.4f}   (allocator events, profile_memory=True)")


if __name__ == "__main__":
    main()
