"""A real DDP training job (gloo, CPU) with an injected straggler, for the distributed tests.

Run under torchrun: ``torchrun --standalone --nproc_per_node N ddp_job.py OUT [options]``.
Every rank records ``OUT`` with ``accelscope.profile`` (or, with ``--bare``, nothing: the
script is then what ``accelscope run`` profiles) and writes what it injected, measured by
itself, to ``TRUTH_DIR/truth-rank-N.json``: per step, its own start and end and how long
it slept in its loader or computed extra. Tests compare accelscope's attribution with it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", help="run directory every rank records into")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--straggler", type=int, default=-1, help="rank that is slow (-1: none)")
    ap.add_argument("--inject", choices=("loader", "compute", "none"), default="none")
    ap.add_argument("--delay-ms", type=float, default=20.0, help="loader sleep or extra compute per step on the straggler")
    ap.add_argument("--delay-share", type=float, default=0.0,
                    help="the injection lasts at least this share of the straggler's own previous step's work, so that "
                         "a loaded machine, which slows the work of every rank, cannot hide it among the ranks' noise")
    ap.add_argument("--mode", default="full")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--truth-dir", default=None, help="where truth-rank-N.json goes (default: OUT's parent)")
    ap.add_argument("--bare", action="store_true", help="no accelscope.profile (run under accelscope run)")
    ap.add_argument("--die-at-step", type=int, default=-1, help="this rank (--die-rank) kills itself with SIGKILL at this step")
    ap.add_argument("--die-rank", type=int, default=-1)
    args = ap.parse_args()

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = DDP(nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    # The truth about waiting, measured by the job itself: when this rank handed each
    # gradient bucket to its all_reduce (its arrival), on the host's epoch clock, stamped once
    # the all-reduce is launched: a rank preempted while launching has not arrived yet.
    arrivals: list[tuple[int, int, int]] = []

    def arrival_hook(state, bucket):
        fut = default_hooks.allreduce_hook(None, bucket)
        arrivals.append((len(steps), bucket.index(), time.time_ns()))
        return fut

    model.register_comm_hook(None, arrival_hook)
    slow = rank == args.straggler
    injected: list[int] = []
    last_work_ns = [0]  # the previous step's work on this rank (after its batch and any injection)

    def delay_s() -> float:
        return max(args.delay_ms / 1e3, args.delay_share * last_work_ns[0] / 1e9)

    def batches():
        x, y = torch.randn(args.batch, 256), torch.randint(0, 10, (args.batch,))
        for _ in range(args.steps):
            t0 = time.perf_counter_ns()
            if slow and args.inject == "loader":
                time.sleep(delay_s())
            injected.append(time.perf_counter_ns() - t0 if slow and args.inject == "loader" else 0)
            yield x, y

    def extra_compute() -> None:
        t0 = time.perf_counter_ns()
        a = torch.randn(128, 128)
        until_ns = delay_s() * 1e9
        while time.perf_counter_ns() - t0 < until_ns:
            a = torch.tanh(a @ a)
        injected[-1] += time.perf_counter_ns() - t0

    import accelscope
    from accelscope.schedule import Schedule

    prof = None
    if not args.bare:
        prof = accelscope.profile(args.out, mode=args.mode, schedule=Schedule(skip_first=2, wait=0, warmup=1, active=max(args.steps - 4, 1), repeat=1))
    steps: list[tuple[int, int]] = []  # (start, end) of each step, time.time_ns
    with prof if prof is not None else contextlib.nullcontext():
        data = prof.iter(batches()) if prof is not None else batches()
        t_start = time.time_ns()
        for i, (x, y) in enumerate(data):
            if i == args.die_at_step and rank == args.die_rank:
                time.sleep(1.5)  # let the recorder flush what it has
                os.kill(os.getpid(), 9)
            if slow and args.inject == "compute":
                extra_compute()
            t_work = time.perf_counter_ns()
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if prof is not None:
                prof.step()
            last_work_ns[0] = time.perf_counter_ns() - t_work
            t_end = time.time_ns()
            steps.append((t_start, t_end))
            t_start = t_end
    truth_dir = args.truth_dir or os.path.dirname(os.path.abspath(args.out))
    with open(os.path.join(truth_dir, f"truth-rank-{rank}.json"), "w") as fh:
        json.dump({"rank": rank, "straggler": args.straggler, "inject": args.inject,
                   "injected_ns": injected, "step_ns": [e - s for s, e in steps], "steps": steps, "arrivals": arrivals,
                   "run_dir": str(prof.run_dir) if prof is not None else None}, fh)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
