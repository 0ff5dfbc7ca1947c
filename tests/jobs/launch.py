"""Launch real multi-process jobs (torchrun, gloo on this CPU) for the distributed tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

JOB = Path(__file__).with_name("ddp_job.py")

# The jobs the tests share (``ddp_job(*SCENARIO)`` in conftest records each once per session):
# 16 steps, 12 of them traced, so that a rank's wait is averaged over enough steps. Each
# injection lasts D ms or as long as the straggler's own previous step's work, whichever is
# longer: a machine loaded by other jobs slows every rank's work (CI has seen steps 2-7x
# slower), and a fixed 20 ms would then drown in the ranks' noise; in proportion it cannot.
LOADER_2 = (2, "--straggler", "1", "--inject", "loader", "--delay-ms", "20", "--delay-share", "1", "--steps", "16")  # rank 1's loader sleeps
COMPUTE_2 = (2, "--straggler", "0", "--inject", "compute", "--delay-ms", "25", "--delay-share", "1", "--steps", "16")  # rank 0 computes more
NONE_2 = (2, "--steps", "16")  # no straggler
LOADER_3 = (3, "--straggler", "2", "--inject", "loader", "--delay-ms", "30", "--delay-share", "1", "--steps", "16")  # rank 2's loader sleeps


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
    hook's timestamps, one host clock, each taken once the all-reduce was launched), each
    rank's overlapping waits counted once."""
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


TF_JOB = Path(__file__).with_name("mwms_job.py")
# TensorFlow's own bug: ``tf.profiler.experimental.stop()`` on a non-chief worker of a
# MultiWorkerMirroredStrategy job aborts the process natively (double free / invalid
# free in the profiler's export) in about 1 run in 10 on TF 2.21 CPU. What it looks like:
TF_STOP_ABORT = "profiler_v2.py"


def _free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def tf_workers(tmp: Path, n: int, *job_args: str, attempts: int = 3, timeout_s: float = 150) -> Path:
    """Run ``mwms_job.py`` as ``n`` workers of one MultiWorkerMirroredStrategy job on
    localhost (each worker records ``DIR/run``); returns ``DIR``, which also holds every
    worker's ``truth-worker-N.json``. A try in which a worker died in TensorFlow's own
    profiler stop (``TF_STOP_ABORT`` in its fatal-error trace) is run again, up to
    ``attempts`` tries; any other failure fails at once."""
    env = dict(os.environ, PYTHONFAULTHANDLER="1", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONWARNINGS="ignore")
    errors = []
    for attempt in range(attempts):
        out = tmp / f"try{attempt}"
        out.mkdir()
        ports = ",".join(map(str, _free_ports(n)))
        procs = [subprocess.Popen([sys.executable, str(TF_JOB), str(out / "run"), str(i), ports, *job_args], env=env, cwd=tmp,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(n)]
        results = []
        for p in procs:
            try:
                _, err = p.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                raise AssertionError(f"MultiWorkerMirroredStrategy job did not finish in {timeout_s} s") from None
            results.append((p.returncode, err))
        if all(rc == 0 for rc, _ in results):
            return out
        aborted = [err for rc, err in results if rc != 0 and "Fatal Python error" in err and TF_STOP_ABORT in err]
        if not aborted:
            raise AssertionError("MultiWorkerMirroredStrategy job failed:\n" + "\n".join(f"worker rc {rc}:\n{err[-2000:]}" for rc, err in results))
        errors.append(aborted[0][-600:])
    raise AssertionError(f"a worker died in TensorFlow's profiler stop in all {attempts} tries:\n" + "\n".join(errors))
