"""Launch real multi-process jobs (torchrun, gloo on this CPU) for the distributed tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

JOB = Path(__file__).with_name("ddp_job.py")


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
