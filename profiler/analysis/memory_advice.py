"""Memory recommendations: what to change on a device short of memory, with the evidence
(what held it at the peak: ``Report.memory_categories``; what the caching allocator reserved
and did not use: ``Report.memory``'s fragmentation) and about how much each change frees.

Advice on what to free is given only where memory limits the run: the device's peak held at
least ``MEMORY_PRESSURE_SHARE`` of its memory, or the loop ran out of it (``out_of_memory``).
The bytes are estimates from the peak's categories, each stated with its model:

* **activation checkpointing** frees up to the activations held at the peak: checkpointed
  blocks keep only their inputs and recompute the rest in the backward;
* **halving the micro-batch** (with gradient accumulation to keep the effective batch) frees
  about half of the activations and inputs, which grow with the batch;
* **mixed precision** (bf16/fp16 autocast) frees about half of the activations where they are
  float32 (the trace does not record dtypes, so this is conditional);
* ``expandable_segments:True`` lets the caching allocator grow segments instead of reserving
  new ones: it frees up to what was reserved but unallocated at the reservation's peak.
"""

from __future__ import annotations

import polars as pl

from accelscope.analysis.report import Recommendation
from accelscope.verdicts import ACTIVATION_ADVICE_SHARE, FRAGMENTATION_ADVICE_MIN_BYTES, FRAGMENTATION_ADVICE_SHARE, MEMORY_PRESSURE_SHARE

MEMORY_ACTIVATIONS = "memory_activations"  # causes of these recommendations
MEMORY_FRAGMENTATION = "memory_fragmentation"


def _mib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def pressed(memory: pl.DataFrame, out_of_memory: set[tuple[int, str]] = frozenset()) -> pl.DataFrame:
    """The rows of Report.memory whose device is short of memory: the peak held at least
    MEMORY_PRESSURE_SHARE of it, or the loop ran out of memory there (``out_of_memory``)."""
    ran_out = pl.lit(False)
    for rank, device in out_of_memory:
        ran_out = ran_out | ((pl.col("rank") == rank) & (pl.col("device") == device))
    return memory.filter((pl.col("peak_share") >= MEMORY_PRESSURE_SHARE).fill_null(False) | ran_out)


def memory_advice(memory: pl.DataFrame, categories: pl.DataFrame, mean_step_ns: float, multi_rank: bool, unit: str = "step",
                  out_of_memory: set[tuple[int, str]] = frozenset()) -> list[Recommendation]:
    """Recommendations for the devices short of memory (``pressed``): activations
    (checkpointing, a smaller micro-batch, mixed precision) when they held at least
    ACTIVATION_ADVICE_SHARE of the peak, ``expandable_segments`` when fragmentation is material."""
    out: list[Recommendation] = []
    for m in pressed(memory, out_of_memory).iter_rows(named=True):
        where = f"rank {m['rank']} · {m['device']}" if multi_rank else m["device"]
        ran_out = (m["rank"], m["device"]) in out_of_memory
        full = " ".join(filter(None, [f"{m['peak_share']:.0%} of its memory" if m["peak_share"] is not None else "", "and ran out of memory" if ran_out else ""]))
        held = {r["category"]: r["bytes"] for r in categories.filter((pl.col("rank") == m["rank"]) & (pl.col("device") == m["device"])).iter_rows(named=True)}
        peak = m["peak_allocated_bytes"]
        act, inputs = held.get("activation", 0), held.get("input", 0)
        if peak > 0 and act >= ACTIVATION_ADVICE_SHARE * peak:
            evidence = f"activations held {_mib(act)} ({act / peak:.0%}) of the {_mib(peak)} allocated at the peak on {where}, {full}"
            out += [
                Recommendation(MEMORY_ACTIVATIONS, evidence, "checkpoint activations (torch.utils.checkpoint around the largest blocks, "
                               "or your framework's activation checkpointing), trading recomputation in the backward for memory",
                               0.0, None, mean_step_ns, "up to the activations held at the peak; the checkpointed blocks' inputs stay", unit, act),
                Recommendation(MEMORY_ACTIVATIONS, evidence, f"halve the micro-batch and accumulate gradients over two micro-batches per {unit}",
                               0.0, None, mean_step_ns, "half the activations and inputs held at the peak, which grow with the batch", unit,
                               (act + inputs) // 2),
                Recommendation(MEMORY_ACTIVATIONS, evidence, "train in mixed precision (torch.autocast with bfloat16) if the model runs in float32",
                               0.0, None, mean_step_ns, "half the activations held at the peak, if they are float32", unit, act // 2),
            ]
        frag = m["fragmentation_bytes"]
        reserved = m["peak_reserved_bytes"]
        if (frag is not None and reserved and m["device"].startswith("cuda") and frag >= FRAGMENTATION_ADVICE_MIN_BYTES
                and frag >= FRAGMENTATION_ADVICE_SHARE * reserved):
            trend = m["fragmentation_bytes_per_step"]
            grows = f", growing {_mib(trend)} per {unit}" if trend is not None and trend >= 2**20 else ""
            evidence = (f"the caching allocator on {where} had reserved {_mib(reserved)} at its peak, {_mib(frag)} ({frag / reserved:.0%}) of it "
                        f"unallocated{grows}, {full}")
            out.append(Recommendation(MEMORY_FRAGMENTATION, evidence, "set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True before the "
                                      "first CUDA allocation, so that segments grow instead of new ones being reserved", 0.0, None, mean_step_ns,
                                      "up to what was reserved but unallocated at the reservation's peak", unit, frag))
    return out

