"""gpu_acceptance.py's memory checks (issue 15): what full mode recorded of the allocator,
against what the loop measured itself.

- ``memory_recorded`` (CPU and GPU): every full-mode run has allocator events, a peak on the
  training device, and no leak (the loop keeps nothing from step to step, so a leak named
  there is a false one);
- ``memory_peak_vs_cuda`` (CUDA only): the report's cuda peak equals, within
  ``PEAK_TOL``, the most ``torch.cuda.max_memory_allocated()`` read in a traced step (the
  script resets the peak statistic before each step's work and reads it after);
- ``memory_light_samples`` (CUDA only): every light-mode run read the allocator at each step's
  end (one ``memory_allocated_bytes`` sample per step on cuda:0), and the report's cuda:0
  peak, from those per-step samples, equals within ``LIGHT_PEAK_TOL`` the most
  ``torch.cuda.max_memory_allocated()`` the loop read in any step.
- ``memory_snapshot_vs_cuda`` (CUDA only): a snapshot recorded with
  ``torch.cuda.memory._record_memory_history`` and imported (traces/torch_snapshot.py) has
  the allocator's own peak.

Each returns ``(status, figures, reason)``; gpu_acceptance.py wraps them as checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PEAK_TOL = 0.02  # the allocator's own total is exact; 2 % for what is allocated between the reset and the window's events
LIGHT_PEAK_TOL = 0.01  # both read the allocator's own peak; what differs is allocated between the loop's read and prof.step()


def memory_recorded(reps: list[tuple[float, dict[str, Any]]], device: str) -> tuple[str, dict[str, Any], str | None]:
    """Full runs (delay, report JSON): allocator events with a peak on ``device`` and no leak."""
    figs: dict[str, Any] = {}
    ok = bool(reps)
    for delay, rep in reps:
        mem = rep.get("memory") or {}
        peaks = {d["device"]: d["peak_allocated_bytes"] for d in mem.get("devices", [])}
        f = {"devices": sorted(peaks), "peak_bytes": peaks.get(device), "leaks": len(mem.get("leaks", [])),
             "memory_leak_bytes_per_step": rep.get("memory_leak_bytes_per_step")}
        f["ok"] = bool(peaks.get(device)) and f["leaks"] == 0
        ok = ok and f["ok"]
        figs[f"d{delay:g}ms"] = f
    return ("pass" if ok else "fail"), figs, None if reps else "no full run opened"


def memory_peak_vs_cuda(reps: list[tuple[float, dict[str, Any], list[int]]]) -> tuple[str, dict[str, Any], str | None]:
    """Full runs (delay, report JSON, per-step max_memory_allocated): the report's cuda:0 peak
    against the most the loop measured in the steps the profiler traced."""
    figs: dict[str, Any] = {"tolerance": PEAK_TOL}
    ok = bool(reps)
    for delay, rep, per_step in reps:
        traced = [s["step"] for s in rep.get("steps", []) if s.get("traced") and s["step"] < len(per_step)]
        truth = max((per_step[i] for i in traced), default=None)
        ours = next((d["peak_allocated_bytes"] for d in (rep.get("memory") or {}).get("devices", []) if d["device"] == "cuda:0"), None)
        diff = None if truth in (None, 0) or ours is None else abs(ours - truth) / truth
        figs[f"d{delay:g}ms"] = {"reported_bytes": ours, "truth_bytes": truth, "traced_steps": len(traced), "rel_diff": diff}
        ok = ok and diff is not None and diff <= PEAK_TOL
    return ("pass" if ok else "fail"), figs, None if reps else "no full run opened"


def memory_light_samples(reps: list[tuple[float, dict[str, Any], int, list[int]]]) -> tuple[str, dict[str, Any], str | None]:
    """Light runs (delay, report JSON, cuda:0 ``memory_allocated_bytes`` samples in the run,
    per-step max_memory_allocated the loop read): a sample per step, and the report's per-step
    samples peak on cuda:0 against the most the loop measured in any step."""
    figs: dict[str, Any] = {"tolerance": LIGHT_PEAK_TOL}
    ok = bool(reps)
    for delay, rep, samples, per_step in reps:
        row = next((d for d in (rep.get("memory") or {}).get("devices", []) if d["device"] == "cuda:0"), {})
        ours, truth = row.get("peak_allocated_bytes"), max(per_step, default=None)
        diff = None if truth in (None, 0) or ours is None else abs(ours - truth) / truth
        f = {"samples": samples, "steps": rep.get("step_count"), "source": row.get("source"), "peak_step": row.get("peak_step"),
             "reported_bytes": ours, "truth_bytes": truth, "rel_diff": diff,
             "memory_leak_bytes_per_step": rep.get("memory_leak_bytes_per_step")}
        f["ok"] = (samples == rep.get("step_count") and row.get("source") == "per-step samples" and diff is not None
                   and diff <= LIGHT_PEAK_TOL)
        ok = ok and f["ok"]
        figs[f"d{delay:g}ms"] = f
    return ("pass" if ok else "fail"), figs, None if reps else "no light run opened"


SNAPSHOT_TOL = 0.01  # the trace's sizes are those asked for: equal to the allocator's requested-bytes peak


def memory_snapshot_vs_cuda(out: Path, steps: int = 4) -> tuple[str, dict[str, Any], str | None]:
    """(CUDA only) A real memory snapshot: ``torch.cuda.memory._record_memory_history()``
    around a few training steps, ``_dump_snapshot``, imported and analysed by accelscope;
    its cuda:0 peak against the allocator's own peaks since the recording began: the
    requested bytes (``requested_bytes.all.peak``, what the trace's sizes are: within
    SNAPSHOT_TOL) and ``max_memory_allocated`` (block sizes, rounded up: never below ours)."""
    import torch
    from torch import nn

    from accelscope.analysis import analyze
    from accelscope.traces.importer import import_traces
    from accelscope.traces.run import Run

    dev = torch.device("cuda:0")
    model = nn.Sequential(nn.Linear(2048, 4096), nn.ReLU(), nn.Linear(4096, 2048)).to(dev)
    opt = torch.optim.Adam(model.parameters())
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.memory._record_memory_history(max_entries=100_000)
    try:
        for _ in range(steps):
            loss = model(torch.randn(512, 2048, device=dev)).square().mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
        torch.cuda.synchronize()
        requested = torch.cuda.memory_stats().get("requested_bytes.all.peak")
        allocated = torch.cuda.max_memory_allocated()
        path = out / "snapshot.pickle"
        torch.cuda.memory._dump_snapshot(str(path))
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    rep = analyze(Run.open(import_traces([path], out / "snapshot-run", force=True, progress=False))).to_dict()
    row = next((d for d in (rep.get("memory") or {}).get("devices", []) if d["device"] == "cuda:0"), {})
    ours = row.get("peak_allocated_bytes")
    diff = None if not requested or ours is None else abs(ours - requested) / requested
    figs = {"reported_bytes": ours, "requested_peak_bytes": requested, "max_memory_allocated": allocated, "rel_diff": diff,
            "tolerance": SNAPSHOT_TOL, "relative": row.get("relative"), "peak_op": row.get("peak_op"), "snapshot_bytes": path.stat().st_size}
    ok = diff is not None and diff <= SNAPSHOT_TOL and ours <= allocated and row.get("relative") is False
    return ("pass" if ok else "fail"), figs, None


OOM_STEP = 5  # the step of the oom_forensics loop that asks for more than the device has


def oom_forensics(device: str) -> tuple[str, dict[str, Any], str | None]:
    """A real out-of-memory error in a full-mode run (CPU and GPU): a loop keeping each step's
    ``w @ w`` (4 MiB, under ``aten::mm``) asks in step ``OOM_STEP`` for twice the device's memory
    (on the CPU, 1 EiB: beyond any address space). The error must come out of
    ``accelscope.profile`` as the same object; the run must record it at that step on that
    device, with (CUDA) the allocator's summary and what torch's OOM observer saw, the bytes
    asked for, and the kept products live under ``aten::mm`` at the failure."""
    import shutil
    import tempfile
    from pathlib import Path

    import torch

    import accelscope
    from accelscope.analysis import analyze
    from accelscope.schedule import Schedule
    from accelscope.traces.run import Run

    cuda = device.startswith("cuda")
    too_much = 2 * torch.cuda.get_device_properties(0).total_memory if cuda else 2**60
    work = Path(tempfile.mkdtemp(prefix="oom-forensics-"))
    kept, inside, outside = [], [], None
    try:
        try:
            with accelscope.profile(work / "oom", framework="torch", live=False, schedule=Schedule(skip_first=1, wait=0, warmup=1, active=6, repeat=1)) as prof:
                for step in range(8):
                    w = torch.randn(1024, 1024, device=device)
                    kept.append(w @ w)
                    if step == OOM_STEP:
                        try:
                            torch.empty(too_much, dtype=torch.uint8, device=device)
                        except BaseException as exc:
                            inside.append(exc)
                            raise
                    prof.step()
        except BaseException as exc:
            outside = exc
        del kept, w
        if cuda:
            torch.cuda.empty_cache()
        run = Run.open(prof.run_dir)
        rec = run.meta.get("oom") or {}
        oom = analyze(run).oom
        top = oom.held_by[0] if oom is not None and oom.held_by else (None, 0, 0)
        figs = {"same_exception": bool(inside) and outside is inside[0], "error_type": type(outside).__name__, "step": rec.get("step"),
                "device": rec.get("device"), "requested_bytes": rec.get("requested_bytes"), "asked_bytes": too_much,
                "allocator": rec.get("allocator"), "observer": rec.get("observer"), "traced_steps": run.meta.get("traced_steps"),
                "text": oom.text if oom is not None else None, "top_op": top[0], "top_op_bytes": top[1]}
        ok = (figs["same_exception"] and rec.get("step") == OOM_STEP and rec.get("device") == ("cuda:0" if cuda else "cpu")
              and (rec.get("requested_bytes") or 0) >= too_much and top[0] == "aten::mm" and top[1] >= 4 * 2**22)
        if cuda:
            observer, allocator = rec.get("observer") or {}, rec.get("allocator") or {}
            ok = ok and observer.get("device") == 0 and (allocator.get("allocated_bytes") or 0) >= 4 * 2**22 and allocator.get("num_ooms", 0) >= 1
        return ("pass" if ok else "fail"), figs, None
    finally:
        shutil.rmtree(work, ignore_errors=True)
