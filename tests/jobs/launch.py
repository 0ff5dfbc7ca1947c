"""Launch real multi-process jobs (torchrun, gloo on this CPU) for the distributed tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

JOB = Path(__file__).with_name("ddp_job.py")

# The jobs the tests share (``ddp_job(*SCENARIO)`` in conftest records each once per session):
# 16 steps, 12 of them traced, so that a rank's wait is averaged over enough steps.
LOADER_2 = (2, "--straggler", "1", "--inject", "loader", "--steps", "16")  # rank 1's loader sleeps 20 ms a step
COMPUTE_2 = (2, "--straggler", "0", "--inject", "compute", "--delay-ms", "25", "--steps", "16")  # rank 0 computes 25 ms more
NONE_2 = (2, "--steps", "16")  # no straggler
LOADER_3 = (3, "--straggler", "2", "--inject", "loader", "--delay-ms", "30", "--steps", "16")  # rank 2's loader sleeps 30 ms


def torchrun(tmp: Path, nproc: int, *job_args: str, run: bool = False, timeout_s: float = 180, check: bool = True) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node N ddp_job.py tmp/ddp ARGS``; with ``run``, under
    ``accelscope run --mode full --out-dir tmp`` instead (the script then records nothing itself)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    if run:
        cmd = [*launcher, "-m", "accelscope", "run", "--mode", "full", "--out-dir", str(tmp), "--", str(JOB), str(tmp / "unused"), "--bare", "--truth-dir", str(tmp), *job_args]
    else:
        cmd = [*launcher, str(JOB), str(tmp / "ddp"), *job_args]
    proc = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=timeout_s)
    if check and proc.returncode != 0:
        raise AssertionError(f"torchrun failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def truths(tmp: Path) -> dict[int, dict]:
    """What each rank measured of its own injection (ddp_job.py's truth-rank-N.json)."""
    return {int(p.stem.rsplit("-", 1)[1]): json.loads(p.read_text()) for p in tmp.glob("truth-rank-*.json")}


def truth_wait_shares(truth: dict[int, dict], steps: set[int]) -> dict[int, float]:
    """Per rank, the share of its step time it waited for the last rank to hand in the same
    gradient bucket, over ``steps``: from the arrivals the job measured itself (a DDP comm
    hook's timestamps, one host clock), each rank's overlapping waits counted once."""
    arrivals: dict[tuple[int, int], dict[int, int]] = {}
    for rank, t in truth.items():
        for step, bucket, at in t["arrivals"]:
            arrivals.setdefault((step, bucket), {})[rank] = at
    out = {}
    for rank, t in truth.items():
        waited = total = 0
        for step in steps:
            start, end = t["steps"][step]
            spans = sorted((at[rank], max(at.values())) for (s, _), at in arrivals.items() if s == step and rank in at)
            covered, reach = 0, None
            for a, b in spans:  # the union of [own arrival, last arrival)
                a = max(a, reach) if reach is not None else a
                if b > a:
                    covered += b - a
                    reach = b
            waited += covered
            total += end - start
        out[rank] = waited / total if total else 0.0
    return out
