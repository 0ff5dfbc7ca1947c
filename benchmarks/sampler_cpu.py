"""CPU time of accelscope's own threads while a training loop runs (target: the sampler
threads together <= 1 % of one core at 10 Hz).

Runs a light-mode profile around a loop that sleeps (so nothing else competes) for
``--seconds``, then reads each thread's user+system CPU time from /proc (psutil) and
prints it as a share of one core, per accelscope thread.

    python benchmarks/sampler_cpu.py [--seconds 10] [--interval 0.1] [--fake-tpu]

``--fake-tpu`` also runs the TPU collector against the tests' loopback gRPC server
speaking libtpu's metrics protocol (two chips), so its sampler thread is measured too;
the server's own threads are not counted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

import accelscope


def thread_cpu_s() -> dict[str, float]:
    names = {t.native_id: t.name for t in threading.enumerate()}
    return {names.get(t.id, str(t.id)): t.user_time + t.system_time for t in psutil.Process().threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=0.1, help="sampling interval (default 0.1 s = 10 Hz)")
    ap.add_argument("--fake-tpu", action="store_true", help="also sample a loopback libtpu metrics server")
    args = ap.parse_args()
    server = None
    if args.fake_tpu:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.collectors.test_tpu import BASE, FakeLibtpu

        server = FakeLibtpu(BASE)
        os.environ["ACCELSCOPE_TPU_METRICS_ADDR"] = server.address
    with tempfile.TemporaryDirectory() as tmp:
        with accelscope.profile(Path(tmp) / "r", mode="light", host_interval_s=args.interval) as prof:
            before = thread_cpu_s()
            t0 = time.perf_counter()
            steps = 0
            while time.perf_counter() - t0 < args.seconds:
                time.sleep(0.01)  # a step of "training" that uses no CPU
                prof.step()
                steps += 1
            after = thread_cpu_s()
            wall = time.perf_counter() - t0
        collectors = prof._collectors
    if server is not None:
        server.close()
    print(f"{wall:.1f} s, {steps} steps, sampling every {args.interval} s; collectors: {', '.join(c.name for c in collectors)}")
    total = 0.0
    for name in sorted(after):
        if not name.startswith("accelscope-"):
            continue
        share = (after[name] - before.get(name, 0.0)) / wall
        total += share
        print(f"  {name:28s} {share * 100:6.3f} % of one core")
    samplers = sum((after[n] - before.get(n, 0.0)) / wall for n in after if n in ("accelscope-host", "accelscope-nvml", "accelscope-tpu"))
    print(f"  sampler threads together     {samplers * 100:6.3f} % of one core   (target <= 1 %)")
    print(f"  all accelscope threads       {total * 100:6.3f} % of one core")


if __name__ == "__main__":
    main()
