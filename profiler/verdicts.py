"""The thresholds behind every verdict, in one leaf module (no imports).

The post-hoc analyzer (``accelscope.analysis``) and the recorder's live analysis
(``accelscope.live``) both classify steps with these, so a step flagged while training
runs gets the same verdict as in ``accelscope analyze``.

The input-bound verdict uses XProf's thresholds on the input-wait share: the share of
step time during which the accelerator had no work while the training loop waited for
input.
"""

from __future__ import annotations

HIGH_THRESHOLD = 0.20
MODERATE_THRESHOLD = 0.05
VERDICT_TEXT = {"high": "highly input-bound", "moderate": "moderately input-bound", "none": "not input-bound",
                "unknown": "input wait unknown"}  # unknown: the run never saw its input waits (Report.unknown says why)
# A cause gets a recommendation when it idles the accelerator at least this share of step time.
RECOMMEND_SHARE = 0.02
# A rank that arrives last at collectives is named a straggler when the time it holds the
# job back is at least this share of step time: ranks of an unperturbed DDP job on a shared
# CPU machine wait 3-13 % for each other from scheduling noise alone (docs/analysis.md).
STRAGGLER_SHARE = 0.15
# ... and when it arrives last in at least this share of the steps with matched collectives.
STRAGGLER_STEPS = 0.75
# Live analysis: a step is idle-heavy when the device utilisation sampled during it averages below this.
IDLE_HEAVY_UTIL_PERCENT = 50.0
# Memory leaks (analysis/leaks.py): a device leaks when its allocated memory at the end of the
# analysed steps grows, by a least-squares slope over them, at least LEAK_MIN_BYTES_PER_STEP
# per step or LEAK_MIN_PEAK_SHARE of its peak per step (whichever is smaller: a 1 MiB-per-step
# leak matters on a CPU run peaking at 20 MiB, and 1 MiB per step on an 80 GB device still
# exhausts it within a run), and grows in at least LEAK_GROWING_SHARE of the changes between
# consecutive steps (a one-off jump, such as optimizer state made in the first step, is not a
# leak), of which there are at least LEAK_MIN_CHANGES.
LEAK_MIN_BYTES_PER_STEP = 2**20
LEAK_MIN_PEAK_SHARE = 0.01
LEAK_GROWING_SHARE = 0.75
# ... where a change grows when it adds at least this part of the slope (not the allocator's noise).
LEAK_GROWING_PART = 0.5
LEAK_MIN_CHANGES = 3
# Memory advice (analysis/memory_advice.py): what to free is advised on a device whose peak
# held at least MEMORY_PRESSURE_SHARE of its memory (or that ran out): below it, memory is not
# what limits the run. Activations are advised on when they held at least ACTIVATION_ADVICE_SHARE
# of the peak; fragmentation when the caching allocator held at least FRAGMENTATION_ADVICE_SHARE
# of its reservation unallocated at its peak, and at least FRAGMENTATION_ADVICE_MIN_BYTES.
MEMORY_PRESSURE_SHARE = 0.85
ACTIVATION_ADVICE_SHARE = 0.25
FRAGMENTATION_ADVICE_SHARE = 0.2
FRAGMENTATION_ADVICE_MIN_BYTES = 256 * 2**20


def verdict_for(share: float) -> str:
    """XProf's classification of an input-wait share: "high", "moderate" or "none"."""
    if share >= HIGH_THRESHOLD:
        return "high"
    if share >= MODERATE_THRESHOLD:
        return "moderate"
    return "none"
