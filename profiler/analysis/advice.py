"""Recommendations: for each cause that idles the device, what triggered it, what to change,
and the step time to expect if that idle time went away.

The advice for each cause comes from the cause table (``causes.TABLE``); this module adds
the evidence (shares, milliseconds per step, the DataLoader's settings) and the projection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from accelscope.analysis.causes import ADVICE, CAUSE_TEXT, CAUSES, FRAMEWORKS, HOST_COMPUTE, INPUT_WAIT, NO_HOST, OPTIMIZER, RANK_WAIT, advice_for
from accelscope.analysis.memory_samples import SOURCE_SAMPLES
from accelscope.analysis.report import Recommendation
from accelscope.analysis.stragglers import Straggler
from accelscope.analysis.tables import middle_name
from accelscope.verdicts import RECOMMEND_SHARE


def dataloader_evidence(meta: dict[str, Any], host_names: pl.Series) -> str:
    """" with num_workers=0" when the run or the trace's DataLoader op names (``host_names``:
    the distinct names of host slices) say how data was loaded."""
    pipeline = meta.get("input_pipeline") or {}
    if "num_workers" in pipeline:
        return f" with num_workers={pipeline['num_workers']}"
    names = host_names.filter(host_names.str.contains(r"DataLoader\)#")).to_list()
    if any("_SingleProcessDataLoaderIter" in n for n in names):
        return " with num_workers=0 (single-process DataLoader)"
    if any("_MultiProcessingDataLoaderIter" in n for n in names):
        return " with DataLoader workers"
    return ""


def framework_of(meta: dict[str, Any]) -> str:
    """The framework whose words the advice uses: the run's (recorded or found in an
    imported trace), PyTorch's when unknown."""
    fw = meta.get("framework")
    name = fw.get("name") if isinstance(fw, dict) else fw
    return name if name in FRAMEWORKS else "torch"


# What the trace shows is already done (PyTorch): such advice is not given again.
FOREACH_OPTIMIZER = r"^aten::_foreach_|^aten::_fused_(adam|adamw|sgd)"
CUDA_GRAPHS = r"^(cuda|hip)GraphLaunch"
TORCH_COMPILE = r"^Torch-Compiled Region|^CompiledFunction|^TorchDynamo|^triton_"


def _already_done(cause: str, framework: str, host_names: pl.Series) -> str | None:
    """Advice for ``cause`` that leaves out what ``host_names`` (distinct host slice names)
    show is already in use; None when nothing is."""
    if framework != "torch" or host_names.len() == 0:
        return None
    if cause == OPTIMIZER and host_names.str.contains(FOREACH_OPTIMIZER).any():
        return ("the optimizer already runs as foreach/fused kernels (aten::_foreach_* in the trace): keep Python work out of "
                "the step, or step it less often (gradient accumulation)")
    if cause == HOST_COMPUTE:
        graphs, compiled = host_names.str.contains(CUDA_GRAPHS).any(), host_names.str.contains(TORCH_COMPILE).any()
        if graphs:
            return ("the host launches work too slowly for the device, and the step already replays CUDA graphs (cudaGraphLaunch "
                    "in the trace): capture more of the step in the graphs, a larger batch, or less Python between replays")
        if compiled:
            return ("the host launches work too slowly for the device, and the step is already compiled (torch.compile regions "
                    "in the trace): capture it as CUDA graphs (mode='reduce-overhead'), a larger batch, or less Python per step")
    return None


HOST_OP_EVIDENCE_SHARE = 0.10  # a host op is named in the evidence when it holds this share of the cause's idle time


# The projection model (docs/analysis.md, "Recommendations"): an upper bound on the gain.
MIN_PROJECTED_STEPS = 3  # fewer analysed steps than this: too little evidence to project


@dataclass(frozen=True)
class Evidence:
    """What a projection may rest on: how many steps were analysed, whether they are real
    steps (not equal windows over a trace without step markers), and the busy time per
    step that no removal of idle time can go below."""

    steps: int
    real_steps: bool
    busy_ns_per_step: float
    unit: str = "step"  # one step in the run's own word: "step", "iteration" or "window"

    def thin(self) -> str | None:
        """Why the evidence is too thin to project, or None."""
        if not self.real_steps:
            return "the trace has no steps, only equal windows over it"
        if self.steps < MIN_PROJECTED_STEPS:
            return f"only {self.steps} analysed step{'s' if self.steps != 1 else ''} (at least {MIN_PROJECTED_STEPS} needed)"
        return None


PROJECTION_MODEL = ("upper bound: the mean step minus this idle time per step, as if it went entirely and the work around it "
                    "stayed as it is; never below the busy time per step")


def project(cause: str, per_step_ns: float, mean_step_ns: float, evidence: Evidence) -> tuple[float | None, str]:
    """(projected step, model or why there is none) for removing ``per_step_ns`` of idle time.
    Bounded: never below the busy time per step, so the gain never exceeds 1 / (1 - share)."""
    reason = evidence.thin()
    if reason is None and cause == NO_HOST:
        reason = "nothing in the trace says what the host did meanwhile, so nothing says what removing it would take"
    if reason is not None:
        return None, reason
    return max(mean_step_ns - per_step_ns, evidence.busy_ns_per_step, 0.0), PROJECTION_MODEL


def recommend(
    idle_by_cause_ns: dict[str, int], total_ns: int, n_steady: int, mean_step_ns: float, has_device: bool, input_evidence: Callable[[], str],
    evidence: Evidence, framework: str = "torch", host_names: pl.Series | None = None,
    host_ops: Callable[[str], list[tuple[str, int]]] | None = None,
) -> list[Recommendation]:
    """One recommendation per cause idling the device at least ``RECOMMEND_SHARE`` of step
    time, largest first. ``idle_by_cause_ns`` and ``total_ns`` are over the steady steps;
    ``input_evidence`` says how data was loaded (asked only when input wait gets advice);
    ``evidence`` bounds the projections, or withholds them; the advice is in ``framework``'s
    words and leaves out what ``host_names`` show is already done; ``host_ops(cause)``: the
    host ops behind the cause's gaps (gap_ops.py), the first named in the evidence."""
    names = host_names if host_names is not None else pl.Series([], dtype=pl.String)
    out = []
    what = "accelerator" if has_device else "compute thread"
    ranked = sorted(idle_by_cause_ns.items(), key=lambda kv: (-kv[1], CAUSES.index(kv[0])))
    for cause, idle_ns in ranked:
        share = idle_ns / total_ns if total_ns else 0.0
        if share < RECOMMEND_SHARE:
            continue
        per_step = idle_ns / max(n_steady, 1)
        u = evidence.unit
        text = f"{CAUSE_TEXT[cause]} idles the {what} {share:.1%} of {u} time ({per_step / 1e6:.1f} ms per {u})"
        if cause == INPUT_WAIT:
            text = f"input wait is {share:.1%} of {u} time{input_evidence()}"
        under = host_ops(cause) if host_ops is not None else []
        if under and under[0][1] >= HOST_OP_EVIDENCE_SHARE * idle_ns:
            name, op_ns = under[0]
            text += f", mostly under {middle_name(name, 60)} ({op_ns / max(n_steady, 1) / 1e6:.1f} ms per {u})"
        projected, model = project(cause, per_step, mean_step_ns, evidence)
        action = _already_done(cause, framework, names) or advice_for(cause, framework)
        out.append(Recommendation(cause, text, action, share, projected, mean_step_ns, model, u))
    return out


# What the late rank should change, by the cause of its lateness (stragglers.LATE_CAUSES).
_LATE_ADVICE = {
    "device_work": "give it less work (uneven batches or sequence lengths, an unbalanced model or pipeline split) "
                   "or find why its device is slower (clocks, thermals, another job on it)",
    "communication": "its earlier collectives take longer: check its links (NVLink/PCIe/network) and its NIC",
    RANK_WAIT: "it waits for yet another rank first: fix that rank",
}
# Exposed communication: collective time the device spends with no compute beside it.
EXPOSED_COMM_SHARE = 0.10
EXPOSED_COMM_ADVICE = (
    "overlap communication with compute (DDP bucket_cap_mb, FSDP prefetch, no synchronising call between backward and "
    "the optimizer), send less (gradient compression, fewer/larger buckets, bf16 gradients), or a faster interconnect"
)


STRAGGLER_MODEL = ("the job's mean step minus what the late rank cost it per step (from the second-to-last arrival to its own), "
                   "as if it arrived with the others and nothing else changed")


def straggler_advice(stragglers: list[Straggler], framework: str = "torch") -> list[Recommendation]:
    """One recommendation per straggler: its rank, why it is late, what to change there, and
    the job's step time if it were not late."""
    out = []
    for s in stragglers:
        own = advice_for(s.cause if s.cause in ADVICE else HOST_COMPUTE, framework)
        action = f"on rank {s.rank}, {_LATE_ADVICE.get(s.cause) or own}"
        evidence = (f"rank {s.rank} arrives last at collectives and holds every other rank back {s.cost_ns_per_step / 1e6:.1f} ms "
                    f"per step ({s.share_of_step:.1%} of step time); before arriving it spent more time than the others in {s.cause_label}")
        out.append(Recommendation(RANK_WAIT, evidence, action, s.share_of_step, s.projected_step_ns, s.mean_step_ns, STRAGGLER_MODEL))
    return out


def exposed_communication(comm_ns: int, wait_ns: int, total_ns: int, n_steady: int, mean_step_ns: float, straggler_named: bool,
                          evidence: Evidence) -> list[Recommendation]:
    """A recommendation when collectives run with no compute beside them for at least
    ``EXPOSED_COMM_SHARE`` of step time: the breakdown's communication (transfer) and, unless
    a straggler's own recommendation already covers it, its waiting for the last rank."""
    exposed = comm_ns + (0 if straggler_named else wait_ns)
    share = exposed / total_ns if total_ns else 0.0
    if share < EXPOSED_COMM_SHARE:
        return []
    per_step = exposed / max(n_steady, 1)
    u = evidence.unit
    text = f"collectives run with no compute beside them {share:.1%} of {u} time ({per_step / 1e6:.1f} ms per {u}"
    if not straggler_named and wait_ns:
        text += f": {wait_ns / total_ns:.1%} waiting for the last rank to arrive, {comm_ns / total_ns:.1%} transferring"
    action = EXPOSED_COMM_ADVICE
    if not straggler_named and wait_ns > comm_ns:
        action += "; most of it is waiting for late ranks, no single one consistently: balance the work per rank (the Ranks table's arrivals)"
    projected, model = project("communication", per_step, mean_step_ns, evidence)
    return [Recommendation("communication", text + ")", action, share, projected, mean_step_ns, model, u)]


MEMORY_LEAK = "memory_leak"  # the ``cause`` of a leak's recommendation
LEAK_PROJECTION = "a leak costs no step time until memory runs out, so there is no step time to project"


def leak_advice(leaks: pl.DataFrame, mean_step_ns: float, multi_rank: bool, unit: str = "step") -> list[Recommendation]:
    """One recommendation per leaking device (Report.memory_leaks): the growth per step and
    what the op left allocated as evidence, what to free as the action; no projection."""
    out = []
    for r in leaks.iter_rows(named=True):
        where = f"rank {r['rank']} · {r['device']}" if multi_rank else r["device"]
        evidence = (f"allocated memory on {where} grows {r['bytes_per_step'] / 2**20:.1f} MiB per {unit} "
                    f"({r['bytes_per_step']:,} B, fitted over {r['steps']} {unit}s, growing in {r['growing_share']:.0%} of them)")
        if r["op"]:
            evidence += f"; {r['op_never_freed_bytes'] / 2**20:.1f} MiB allocated under {r['op']} is never freed"
            action = (f"free what {r['op']} allocates once it is used, or stop keeping its results across {unit}s: "
                      "detach() tensors you store, .item() the losses and metrics you log or accumulate")
        else:
            how = ("record with mode='full', whose allocator events name it" if r.get("source") == SOURCE_SAMPLES else
                   "record with a newer torch, whose allocator events carry addresses")
            action = ("stop keeping tensors across steps: detach() tensors you store, .item() the losses and metrics you log or "
                      f"accumulate ({how}, to see the op)")
        out.append(Recommendation(MEMORY_LEAK, evidence, action, 0.0, None, mean_step_ns, LEAK_PROJECTION, unit))
    return out
