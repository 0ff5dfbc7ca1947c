"""Real-GPU acceptance: a CUDA training loop recorded four ways, checked against its own truths.

For each injected loader delay D (0, 5, 20 ms, slept inside the Dataset, ``num_workers=0``)
the same loop runs bare, under ``accelscope.profile(mode="light")``, ``mode="full"`` and
bare ``torch.profiler`` on the same schedule, interleaved round by round. Checks (each
pass / fail / skipped, with its figures; a failing check or way never stops the others):

- full mode traced CUDA kernels, memcpys, memsets, with streams and launch correlation;
- every accelscope run opens in ``analyze`` (``report.to_dict()``) and the dashboard data layer;
- NVML counters sampled at ~10 Hz and within 5 % of ``nvidia-smi`` read at the same moments;
- per-step GPU busy share within 3 pp of CUDA events around each step's work, and
  consistent with NVML's utilisation;
- input-wait share within 3 pp of the delay measured inside the Dataset over the step time;
- overhead: light / bare <= 1.02 and full / bare torch.profiler <= 1.10 (median step);
- memory (gpu_memory.py): full runs record allocator events with a peak and no false leak;
  on CUDA the peak equals the most ``torch.cuda.max_memory_allocated()`` of a traced step;
  light runs on CUDA sample the allocator at every step, their peak within 1 % of the loop's;
  a memory snapshot (``_record_memory_history`` + ``_dump_snapshot``) imports with the
  allocator's own peak; a real out-of-memory error is recorded at its step with the allocator's state and what held
  the memory, and propagates unchanged (CPU: an allocation beyond any address space).

Prints one JSON object, and writes it to ``$OUT/gpu_acceptance.json`` when ``OUT`` is set
(plus the last round's runs as ``runs.tar.gz`` when small). ``--dry-run`` runs the same
code on the CPU with tiny sizes; CUDA-only checks then read "skipped: no CUDA device".

    python benchmarks/gpu_acceptance.py [--dry-run] [--rounds 3] [--steps 60] [--budget-s 330]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from gpu_memory import memory_light_samples, memory_peak_vs_cuda, memory_recorded, memory_snapshot_vs_cuda, oom_forensics  # beside this script
from torch import nn

import accelscope
from accelscope.schedule import Schedule

DELAYS_MS = (0, 5, 20)
WAYS = ("bare", "light", "full", "torch.profiler")
LIGHT_TARGET, FULL_TARGET = 1.02, 1.10
INPUT_WAIT_TOL_PP = 3.0
BUSY_TOL_PP = 3.0
NVML_VS_BUSY_TOL_PP = 10.0  # NVML utilisation is "a kernel ran during the sample period": coarser
NVML_TOL = 0.05
NO_CUDA = "skipped: no CUDA device"
CHECKS = (
    "full_trace_device_work", "runs_open_in_analyze", "runs_open_in_dashboard",
    "nvml_sampled_10hz", "nvml_vs_nvidia_smi", "gpu_busy_vs_cuda_events", "gpu_busy_vs_nvml",
    "input_wait_share", "overhead_light", "overhead_full", "memory_recorded", "memory_peak_vs_cuda",
    "memory_light_samples", "memory_snapshot_vs_cuda", "oom_forensics",
)
SMI_FIELDS = {  # nvidia-smi field -> (NVML counter, scale from counter to the smi unit, relative?)
    "utilization.gpu": ("gpu_util_percent", 1.0, False),
    "memory.used": ("memory_used_bytes", 1 / 2**20, True),
    "power.draw": ("power_watts", 1.0, True),
    "clocks.sm": ("sm_clock_mhz", 1.0, True),
    "clocks.mem": ("memory_clock_mhz", 1.0, True),
}


def one_line(exc: BaseException) -> str:
    """An exception as one line."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")


def check(status: str, figures: dict[str, Any] | None = None, reason: str | None = None) -> dict[str, Any]:
    """One check's entry."""
    out: dict[str, Any] = {"status": status, "figures": figures or {}}
    if reason:
        out["reason"] = reason
    return out


# -- the training loop ------------------------------------------------------------------------
class DelayDataset(torch.utils.data.Dataset):
    """Synthetic batches; each ``__getitem__`` sleeps ``delay_s`` and records how long it slept."""

    def __init__(self, xs: torch.Tensor, ys: torch.Tensor, steps: int, delay_s: float):
        self.xs, self.ys, self.steps, self.delay_s = xs, ys, steps, delay_s
        self.slept_s: list[float] = [0.0] * steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        t0 = time.perf_counter()
        if self.delay_s:
            time.sleep(self.delay_s)
        self.slept_s[i] = time.perf_counter() - t0
        k = i % len(self.xs)
        return self.xs[k], self.ys[k]


def make_model(dry: bool) -> nn.Module:
    """A small ResNet-like CNN (tiny on the dry run)."""
    c = 16 if dry else 128

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                                      nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x + self.body(x))

    return nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.ReLU(), Block(), Block(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))


class Loop:
    """The model, its optimiser, the data and one timed training step."""

    def __init__(self, dry: bool, device: torch.device, target_ms: float):
        torch.manual_seed(0)
        self.device, self.cuda = device, device.type == "cuda"
        self.model = make_model(dry).to(device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.loss_fn = nn.CrossEntropyLoss()
        self.hw = 16 if dry else 32
        self.batch = self._calibrate(target_ms, 4 if dry else 32)
        self.xs = torch.randn(4, self.batch, 3, self.hw, self.hw)
        self.ys = torch.randint(0, 10, (4, self.batch))
        if self.cuda:
            self.xs, self.ys = self.xs.pin_memory(), self.ys.pin_memory()

    def _work(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.opt.step()
        return loss

    def _calibrate(self, target_ms: float, batch: int) -> int:
        """The batch size whose step takes about ``target_ms``."""
        for _ in range(2):
            x, y = torch.randn(batch, 3, self.hw, self.hw), torch.randint(0, 10, (batch,))
            for _ in range(3):
                self._work(x, y).item()
            t = time.perf_counter()
            for _ in range(5):
                self._work(x, y).item()
            per_ms = (time.perf_counter() - t) / 5 * 1e3
            batch = max(2, min(2048, int(batch * target_ms / max(per_ms, 1e-3))))
        return batch

    def step(self, x: torch.Tensor, y: torch.Tensor, gpu_ms: list[float] | None, mem_peak: list[int] | None = None) -> None:
        """One step: the work between CUDA events (on GPU), then ``loss.item()`` as a real loop
        logs; on GPU also the step's most allocated memory (``max_memory_allocated``, reset first)."""
        if self.cuda and gpu_ms is not None:
            torch.cuda.reset_peak_memory_stats()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            loss = self._work(x, y)
            end.record()
            loss.item()
            gpu_ms.append(start.elapsed_time(end))
            if mem_peak is not None:
                mem_peak.append(torch.cuda.max_memory_allocated())
        else:
            self._work(x, y).item()


# -- the four ways ---------------------------------------------------------------------------
class Truth:
    """What the script measured itself in one run: per step wall time, delay slept, GPU time."""

    def __init__(self) -> None:
        self.step_s: list[float] = []
        self.slept_s: list[float] = []
        self.gpu_ms: list[float] = []
        self.mem_peak: list[int] = []  # per step, max_memory_allocated (CUDA only)
        self.per_step_s = 0.0
        self.smi: list[dict[str, float]] = []


def run_way(way: str, loop: Loop, delay_ms: float, steps: int, sched: Schedule, out: Path,
            smi: Callable[[Any], Any] | None = None) -> tuple[Truth, Path | None]:
    """Train ``steps`` steps one way; returns the truths and the accelscope run directory."""
    truth = Truth()
    ds = DelayDataset(loop.xs, loop.ys, steps, delay_ms / 1e3)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=0)
    run_dir = None

    def timed(items: Any, mark: Callable[[], None]) -> None:
        last = time.perf_counter()
        for x, y in items:
            loop.step(x, y, truth.gpu_ms, truth.mem_peak)
            mark()
            now = time.perf_counter()
            truth.step_s.append(now - last)
            last = now

    if way == "bare":
        t = time.perf_counter()
        timed(loader, lambda: None)
        truth.per_step_s = (time.perf_counter() - t) / steps
    elif way in ("light", "full"):
        with accelscope.profile(out / f"{way}-d{delay_ms:g}-{time.perf_counter_ns()}", mode=way, schedule=sched) as prof:
            poller = smi(prof) if smi is not None and way == "full" else None
            t = time.perf_counter()
            try:
                timed(prof.iter(loader), prof.step)
            finally:
                truth.per_step_s = (time.perf_counter() - t) / steps
                if poller is not None:
                    truth.smi = poller.stop()
        run_dir = prof.run_dir
    else:
        from torch.profiler import ProfilerAction, ProfilerActivity, profile

        to_torch = {a: getattr(ProfilerAction, a.name) for a in type(sched(0))}
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if loop.cuda else [])
        traces = out / f"tp-d{delay_ms:g}-{time.perf_counter_ns()}"
        traces.mkdir(parents=True)
        ready = lambda p: p.export_chrome_trace(str(traces / f"{time.perf_counter_ns()}.json"))  # noqa: E731
        with profile(activities=acts, schedule=lambda s: to_torch[sched(s)], on_trace_ready=ready) as p:
            t = time.perf_counter()
            timed(loader, p.step)
            truth.per_step_s = (time.perf_counter() - t) / steps
        if not any(traces.iterdir()):
            raise RuntimeError("torch.profiler wrote no trace")
    truth.slept_s = ds.slept_s
    return truth, run_dir


class SmiPoller:
    """Reads ``nvidia-smi --query-gpu`` every ``period_s`` on a thread, stamped on the run's clock."""

    def __init__(self, prof: Any, gpu: str, period_s: float = 0.5):
        self.prof, self.gpu, self.period_s = prof, gpu, period_s
        self.rows: list[dict[str, float]] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="smi-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        cmd = ["nvidia-smi", f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits", "-i", self.gpu]
        while not self._stop.wait(self.period_s):
            try:
                t0 = self.prof.now_ns()
                text = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=True).stdout
                t1 = self.prof.now_ns()
                values = [v.strip() for v in text.strip().splitlines()[0].split(",")]
                row = {"time_ns": (t0 + t1) / 2, "read_ns": t1 - t0}
                for name, v in zip(SMI_FIELDS, values):
                    try:
                        row[name] = float(v)
                    except ValueError:
                        pass
                self.rows.append(row)
            except Exception as exc:
                self.error = one_line(exc)
                return

    def stop(self) -> list[dict[str, float]]:
        self._stop.set()
        self._thread.join(10)
        return self.rows


def smi_gpu_id() -> str:
    """The GPU in use as nvidia-smi names it: its UUID, else its CUDA_VISIBLE_DEVICES entry."""
    uuid = str(getattr(torch.cuda.get_device_properties(torch.cuda.current_device()), "uuid", "") or "")
    if uuid:
        return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
    return (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]


# -- checks ----------------------------------------------------------------------------------
def analysed_truth(rep: dict[str, Any], truth: Truth, rank_steps: bool = True) -> dict[str, Any]:
    """The truths over the steps the report analysed: Σ slept / Σ step wall, Σ GPU time / Σ wall."""
    idx = [s["step"] for s in rep.get("steps", []) if s.get("analysed") and s["step"] < len(truth.step_s)]
    wall = sum(truth.step_s[i] for i in idx)
    out: dict[str, Any] = {"steps": idx, "wall_s": wall}
    if wall > 0:
        out["input_wait_share"] = sum(truth.slept_s[i] for i in idx) / wall
        if truth.gpu_ms:
            out["gpu_busy_share"] = sum(truth.gpu_ms[i] for i in idx) / 1e3 / wall
    return out


def check_device_work(runs: list[tuple[float, Any]], cuda: bool) -> dict[str, Any]:
    """Full mode traced kernels, memcpys and memsets on CUDA streams, linked to their launches."""
    if not cuda:
        return check("skipped", reason=NO_CUDA)
    import polars as pl

    figs: dict[str, Any] = {}
    ok = bool(runs)
    for delay, run in runs:
        ev = run.slices
        dev = ev.filter(pl.col("device").str.starts_with("cuda"))
        counts = {k: int((dev["kind"] == k).sum()) for k in ("kernel", "memcpy", "memset")}
        work = dev.filter(pl.col("kind").is_in(["kernel", "memcpy", "memset"]))
        host_ids = set(ev.filter(pl.col("device") == "cpu")["correlation_id"].drop_nulls().to_list())
        linked = sum(1 for c in work["correlation_id"].to_list() if c is not None and c in host_ids)
        f = dict(counts, streams=sorted(set(work["stream"].drop_nulls().to_list())),
                 without_stream=int(work["stream"].null_count()), linked_to_launch=linked, device_slices=work.height)
        f["ok"] = all(counts.values()) and f["without_stream"] == 0 and work.height > 0 and linked >= 0.95 * work.height
        ok = ok and f["ok"]
        figs[f"d{delay:g}ms"] = f
    return check("pass" if ok else "fail", figs)


def check_nvml(runs: list[tuple[float, Any, Truth]], cuda: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """NVML's sample rate, and its values against nvidia-smi read at the same moments."""
    if not cuda:
        return check("skipped", reason=NO_CUDA), check("skipped", reason=NO_CUDA)
    if shutil.which("nvidia-smi") is None:
        return check("fail", reason="no nvidia-smi on PATH"), check("skipped", reason="no nvidia-smi on PATH")
    rate_figs: dict[str, Any] = {}
    diffs: dict[str, list[float]] = {k: [] for k in SMI_FIELDS}
    pairs = 0
    for delay, run, truth in runs:
        c = run.counters
        c = c.filter(c["device"] == "cuda:0")
        mem = c.filter(c["name"] == "memory_used_bytes")["time_ns"].sort().to_list()
        span = (mem[-1] - mem[0]) / 1e9 if len(mem) > 1 else 0.0
        rate_figs[f"d{delay:g}ms_hz"] = round((len(mem) - 1) / span, 2) if span else 0.0
        series = {n: c.filter(c["name"] == n).drop_nulls("value").sort("time_ns") for n, _, _ in SMI_FIELDS.values()}
        for row in truth.smi:
            for field, (name, scale, relative) in SMI_FIELDS.items():
                s = series[name]
                if field not in row or s.height == 0:
                    continue
                i = int((s["time_ns"] - row["time_ns"]).abs().arg_min())
                if abs(s["time_ns"][i] - row["time_ns"]) > 150e6:
                    continue
                a, b = s["value"][i] * scale, row[field]
                diffs[field].append(abs(a - b) / max(abs(b), 1e-9) * 100 if relative else abs(a - b))
            pairs += 1
    rates = list(rate_figs.values())
    rate = check("pass" if rates and all(7.0 <= r <= 13.0 for r in rates) else "fail", dict(rate_figs, target_hz="10 (7-13)"))
    figs: dict[str, Any] = {"smi_reads": pairs}
    ok = pairs > 0
    for field, d in diffs.items():
        unit = "pp" if not SMI_FIELDS[field][2] else "%"
        med = statistics.median(d) if d else None
        figs[field] = {"pairs": len(d), f"median_abs_diff_{unit}": None if med is None else round(med, 2),
                       "within_5": sum(1 for v in d if v <= 5.0)}
        ok = ok and med is not None and med <= NVML_TOL * 100
    return rate, check("pass" if ok else "fail", figs)


def check_busy(reps: list[tuple[float, dict[str, Any], Truth]], cuda: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Trace busy share vs CUDA events, and vs NVML utilisation."""
    if not cuda:
        return check("skipped", reason=NO_CUDA), check("skipped", reason=NO_CUDA)
    ev_figs: dict[str, Any] = {}
    nv_figs: dict[str, Any] = {}
    ev_ok = nv_ok = bool(reps)
    for delay, rep, truth in reps:
        t = analysed_truth(rep, truth)
        traced = rep.get("busy_share")
        truth_busy = t.get("gpu_busy_share")
        diff = None if traced is None or truth_busy is None else abs(traced - truth_busy) * 100
        ev_figs[f"d{delay:g}ms"] = {"trace_busy_share": traced, "cuda_event_busy_share": truth_busy,
                                    "diff_pp": diff, "steps": len(t["steps"])}
        ev_ok = ev_ok and diff is not None and diff <= BUSY_TOL_PP
        nvml = next((d.get("sampled_mean_percent") for d in rep.get("devices", []) if str(d.get("device", "")).startswith("cuda")), None)
        nd = None if nvml is None or truth_busy is None else abs(nvml - truth_busy * 100)
        nv_figs[f"d{delay:g}ms"] = {"nvml_util_mean_percent": nvml, "cuda_event_busy_percent": None if truth_busy is None else truth_busy * 100, "diff_pp": nd}
        nv_ok = nv_ok and nd is not None and nd <= NVML_VS_BUSY_TOL_PP
    ev_figs["tolerance_pp"], nv_figs["tolerance_pp"] = BUSY_TOL_PP, NVML_VS_BUSY_TOL_PP
    return check("pass" if ev_ok else "fail", ev_figs), check("pass" if nv_ok else "fail", nv_figs)


def check_input_wait(reps: list[tuple[str, float, dict[str, Any], Truth]]) -> dict[str, Any]:
    """Reported input-wait share vs the delay slept inside the Dataset over the measured step time."""
    figs: dict[str, Any] = {"tolerance_pp": INPUT_WAIT_TOL_PP}
    ok = bool(reps)
    for way, delay, rep, truth in reps:
        t = analysed_truth(rep, truth)
        got = rep.get("input_wait_share")
        want = t.get("input_wait_share")
        diff = None if got is None or want is None else abs(got - want) * 100
        figs[f"{way}_d{delay:g}ms"] = {"reported": got, "truth": want, "diff_pp": diff, "steps": len(t["steps"])}
        ok = ok and diff is not None and diff <= INPUT_WAIT_TOL_PP
    return check("pass" if ok else "fail", figs)


def check_overhead(per_step: dict[tuple[str, float], list[float]], num: str, den: str, target: float) -> dict[str, Any]:
    """Median per-step time of ``num`` over ``den`` for each delay; the check is on D = 0 ms."""
    figs: dict[str, Any] = {"target": target}
    for d in DELAYS_MS:
        a, b = per_step.get((num, d)), per_step.get((den, d))
        if a and b:
            figs[f"d{d}ms"] = {"ratio": round(statistics.median(a) / statistics.median(b), 4),
                               f"{num}_ms": round(statistics.median(a) * 1e3, 3), f"{den}_ms": round(statistics.median(b) * 1e3, 3),
                               "rounds": min(len(a), len(b))}
    if "d0ms" not in figs:
        return check("fail", figs, reason=f"no {num} or {den} timing at D = 0 ms")
    return check("pass" if figs["d0ms"]["ratio"] <= target else "fail", figs)


# -- driver ----------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="the same code on the CPU, tiny sizes")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3)")
    ap.add_argument("--steps", type=int, default=None, help="steps per run (60; dry run 40)")
    ap.add_argument("--budget-s", type=float, default=330.0, help="start no new round past this many seconds (330)")
    args = ap.parse_args()
    t_start = time.perf_counter()
    dry = args.dry_run
    cuda = torch.cuda.is_available() and not dry
    out_env = os.environ.get("OUT")
    if not dry and not torch.cuda.is_available():
        text = json.dumps({"script": "benchmarks/gpu_acceptance.py", "error": "no CUDA device: run with --dry-run on a CPU"})
        print(text)
        if out_env:
            Path(out_env).mkdir(parents=True, exist_ok=True)
            (Path(out_env) / "gpu_acceptance.json").write_text(text + "\n", encoding="utf-8")
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    torch.backends.cudnn.benchmark = True
    if dry:
        torch.set_num_threads(1)
    steps = args.steps or (40 if dry else 60)
    rounds = args.rounds or 3
    sched = Schedule()  # the default: what users get; 60 steps hold its 4 windows, 40 steps 3
    doc: dict[str, Any] = {
        "script": "benchmarks/gpu_acceptance.py", "dry_run": dry, "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "python": platform.python_version(), "torch": torch.__version__, "accelscope": accelscope.__version__,
        "device": {"kind": device.type}, "settings": {"delays_ms": list(DELAYS_MS), "steps": steps, "rounds": rounds,
                                                       "schedule": sched.to_dict(), "ways": list(WAYS)},
        "ways": {w: {"runs": 0, "errors": []} for w in WAYS}, "checks": {},
    }
    if cuda:
        p = torch.cuda.get_device_properties(0)
        doc["device"].update(name=p.name, memory_bytes=p.total_memory, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
        try:
            doc["device"]["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i", smi_gpu_id()],
                                                     capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception as exc:
            doc["device"]["driver"] = one_line(exc)
    loop = Loop(dry, device, 10.0 if dry else 15.0)
    doc["settings"]["batch"] = loop.batch
    smi = (lambda prof: SmiPoller(prof, smi_gpu_id())) if cuda and shutil.which("nvidia-smi") else None
    work = Path(tempfile.mkdtemp(prefix="gpu-acceptance-"))
    per_step: dict[tuple[str, float], list[float]] = {}
    last: dict[tuple[str, float], tuple[Truth, Path | None]] = {}
    try:
        for way in WAYS:  # warm-up: allocator, cuDNN autotuning, Kineto initialisation
            try:
                run_way(way, loop, 0, min(steps, 16), sched, work / "warmup")
            except Exception as exc:
                doc["ways"][way]["errors"].append(f"warm-up: {one_line(exc)}")
        for r in range(rounds):
            if r and time.perf_counter() - t_start > args.budget_s:
                doc["settings"]["rounds_done"] = r
                break
            for d in DELAYS_MS:
                for way in WAYS:
                    try:
                        final = r == rounds - 1 or time.perf_counter() - t_start > args.budget_s
                        truth, run_dir = run_way(way, loop, d, steps, sched, work / f"r{r}", smi if final else None)
                    except Exception as exc:
                        doc["ways"][way]["errors"].append(f"round {r} D={d} ms: {one_line(exc)}")
                        continue
                    doc["ways"][way]["runs"] += 1
                    per_step.setdefault((way, d), []).append(truth.per_step_s)
                    last[(way, d)] = (truth, run_dir)
            print(f"round {r + 1}/{rounds} done at {time.perf_counter() - t_start:.1f} s", file=sys.stderr, flush=True)
        doc["checks"] = run_checks(last, per_step, cuda, doc)
        if out_env:
            save_runs(last, Path(out_env), doc)
    except Exception as exc:  # the driver itself: still report what there is
        doc["error"] = one_line(exc)
        doc["traceback"] = traceback.format_exc().splitlines()[-6:]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name in CHECKS:
        doc["checks"].setdefault(name, check("fail", reason="not reached: " + doc.get("error", "unknown")))
    doc["summary"] = {s: sorted(n for n, c in doc["checks"].items() if c["status"] == s) for s in ("pass", "fail", "skipped")}
    doc["duration_s"] = round(time.perf_counter() - t_start, 1)
    text = json.dumps(doc, indent=1, default=str)
    print(text)
    if out_env:
        Path(out_env).mkdir(parents=True, exist_ok=True)
        (Path(out_env) / "gpu_acceptance.json").write_text(text + "\n", encoding="utf-8")
    return 0 if not doc["summary"]["fail"] and "error" not in doc else 1


def run_checks(last: dict[tuple[str, float], tuple[Truth, Path | None]], per_step: dict[tuple[str, float], list[float]],
               cuda: bool, doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every check on the last round's runs (timings over every round); one failing never stops the rest."""
    from accelscope.analysis import analyze
    from accelscope.traces.run import Run

    checks: dict[str, dict[str, Any]] = {}
    opened: dict[tuple[str, float], tuple[Any, dict[str, Any]]] = {}
    a_figs: dict[str, Any] = {}
    d_figs: dict[str, Any] = {}
    for way in ("light", "full"):
        for d in DELAYS_MS:
            key = f"{way}_d{d}ms"
            if (way, d) not in last:
                a_figs[key] = d_figs[key] = "no run (see ways)"
                continue
            run_dir = last[(way, d)][1]
            try:
                t = time.perf_counter()
                run = Run.open(run_dir)
                rep = analyze(run).to_dict()
                missing = [k for k in ("schema_version", "input_wait_share", "busy_share", "steps", "devices", "breakdown") if k not in rep]
                a_figs[key] = {"ok": not missing, "missing_keys": missing, "steps": rep.get("step_count"), "s": round(time.perf_counter() - t, 2),
                               "input_wait_share": rep.get("input_wait_share"), "busy_share": rep.get("busy_share"),
                               "collector_problems": rep.get("run_info", {}).get("collector_problems")}
                if not missing:
                    opened[(way, d)] = (run, rep)
            except Exception as exc:
                a_figs[key] = {"ok": False, "error": one_line(exc)}
            try:
                from accelscope.dashboard.report import build_report

                t = time.perf_counter()
                html = build_report(run_dir)
                d_figs[key] = {"ok": "<html" in html[:200] and len(html) > 1000, "html_bytes": len(html), "s": round(time.perf_counter() - t, 2)}
            except Exception as exc:
                d_figs[key] = {"ok": False, "error": one_line(exc)}
    ok = lambda figs: all(isinstance(v, dict) and v.get("ok") for v in figs.values())  # noqa: E731
    checks["runs_open_in_analyze"] = check("pass" if ok(a_figs) else "fail", a_figs)
    checks["runs_open_in_dashboard"] = check("pass" if ok(d_figs) else "fail", d_figs)
    full = [(d, opened[("full", d)][0]) for d in DELAYS_MS if ("full", d) in opened]
    steps = [(d, opened[("full", d)][0], last[("full", d)][0]) for d in DELAYS_MS if ("full", d) in opened]
    for name, fn in (
        ("full_trace_device_work", lambda: {"full_trace_device_work": check_device_work(full, cuda)}),
        ("nvml", lambda: dict(zip(("nvml_sampled_10hz", "nvml_vs_nvidia_smi"), check_nvml(steps, cuda)))),
        ("busy", lambda: dict(zip(("gpu_busy_vs_cuda_events", "gpu_busy_vs_nvml"),
                                  check_busy([(d, opened[("full", d)][1], last[("full", d)][0]) for d in DELAYS_MS if ("full", d) in opened], cuda)))),
        ("input_wait_share", lambda: {"input_wait_share": check_input_wait(
            [(w, d, opened[(w, d)][1], last[(w, d)][0]) for w in ("light", "full") for d in DELAYS_MS if (w, d) in opened])}),
        ("overhead_light", lambda: {"overhead_light": check_overhead(per_step, "light", "bare", LIGHT_TARGET)}),
        ("overhead_full", lambda: {"overhead_full": check_overhead(per_step, "full", "torch.profiler", FULL_TARGET)}),
        ("memory_recorded", lambda: {"memory_recorded": check(*memory_recorded(
            [(d, opened[("full", d)][1]) for d in DELAYS_MS if ("full", d) in opened], "cuda:0" if cuda else "cpu"))}),
        ("memory_peak_vs_cuda", lambda: {"memory_peak_vs_cuda": check(*memory_peak_vs_cuda(
            [(d, opened[("full", d)][1], last[("full", d)][0].mem_peak) for d in DELAYS_MS if ("full", d) in opened]))
            if cuda else check("skipped", reason=NO_CUDA)}),
        ("memory_light_samples", lambda: {"memory_light_samples": check(*memory_light_samples(
            [(d, opened[("light", d)][1], light_samples(opened[("light", d)][0]), last[("light", d)][0].mem_peak)
             for d in DELAYS_MS if ("light", d) in opened])) if cuda else check("skipped", reason=NO_CUDA)}),
        ("memory_snapshot_vs_cuda", lambda: {"memory_snapshot_vs_cuda": check(*memory_snapshot_vs_cuda(Path(tempfile.mkdtemp(prefix="accelscope-snapshot-"))))
                                             if cuda else check("skipped", reason=NO_CUDA)}),
        ("oom_forensics", lambda: {"oom_forensics": check(*oom_forensics("cuda" if cuda else "cpu"))}),  # last: it fills the device
    ):
        try:
            checks.update(fn())
        except Exception as exc:
            checks[name if name in CHECKS else f"{name}_checks"] = check("fail", reason=one_line(exc))
    if cuda and steps:
        smi_errors = [t.smi for _, _, t in steps if not t.smi]
        if smi_errors:
            doc["smi_note"] = f"{len(smi_errors)} full runs without nvidia-smi reads"
    return checks


def light_samples(run: Any) -> int:
    """How many ``memory_allocated_bytes`` samples of cuda:0 a run holds (one per step expected)."""
    c = run.counters
    return c.filter((c["name"] == "memory_allocated_bytes") & (c["device"] == "cuda:0")).height


def save_runs(last: dict[tuple[str, float], tuple[Truth, Path | None]], out: Path, doc: dict[str, Any], limit: int = 40 * 2**20) -> None:
    """The last round's accelscope runs as ``OUT/runs.tar.gz`` when they are small."""
    dirs = [p for _, p in last.values() if p is not None and p.exists()]
    size = sum(f.stat().st_size for p in dirs for f in p.rglob("*") if f.is_file())
    if size > limit:
        doc["runs_archive"] = f"not written: {size / 2**20:.0f} MiB of runs > {limit / 2**20:.0f} MiB"
        return
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "runs.tar.gz", "w:gz") as tar:
        for p in dirs:
            tar.add(p, arcname=p.name)
    doc["runs_archive"] = f"runs.tar.gz ({size / 2**20:.1f} MiB before compression)"


if __name__ == "__main__":
    sys.exit(main())
