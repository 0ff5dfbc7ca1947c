"""The analyzer: from a run's tables to one report of every figure the outputs show.

    from accelscope.analysis import analyze
    report = analyze(Run.open("runs/exp1"))

Rooms: ``intervals`` (vectorised interval arithmetic), ``causes`` (the idle-cause table),
``breakdown`` (per rank: steps, idle gaps, busy time), ``steps`` (warm-up, traced steps,
outliers), ``launches`` (launch latency, queue depth, stream overlap), ``utilisation``
(per device), ``advice`` (recommendations), ``tables`` (time per name), ``report`` (the
report model and its JSON), ``analyzer`` (``analyze``), ``cache`` (``analyze_cached``: the
report kept inside a finished run), ``compare`` (two reports),
``gates`` (CI gates). Verdict thresholds live in ``accelscope.verdicts``.
"""

from __future__ import annotations

from accelscope.analysis.analyzer import NoStepsError, analyze
from accelscope.analysis.gates import check_gates
from accelscope.analysis.report import SCHEMA_VERSION, Basis, Recommendation, Report, RunInfo

__all__ = ["analyze", "check_gates", "NoStepsError", "Report", "RunInfo", "Basis", "Recommendation", "SCHEMA_VERSION"]
