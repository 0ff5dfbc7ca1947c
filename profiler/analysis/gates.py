"""CI gates on the report: ``accelscope analyze --fail-if "input_wait_share>0.10"``."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

_GATE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|==|!=|>|<)\s*([-+0-9.eE]+)\s*$")


def check_gates(doc: dict[str, Any], gates: list[str]) -> list[str]:
    """The gates (``"input_wait_share>0.10"``) that ``doc`` crosses, as messages.

    A metric is a dotted path into the ``analyze --json`` document, e.g. ``idle_share``,
    ``mean_step_us`` or ``idle_by_cause.h2d_copy.share``. A metric the run cannot know
    (null, its reason in ``doc["unknown"]``) crosses every gate: CI must not pass on a
    figure nobody measured. Raises ValueError for a gate that does not parse or names no
    number.
    """
    crossed = []
    ops = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal, "==": np.equal, "!=": np.not_equal}
    for gate in gates:
        m = _GATE.match(gate)
        if not m:
            raise ValueError(f"--fail-if {gate!r}: expected METRIC OP NUMBER, e.g. 'input_wait_share>0.10'")
        path, op, value = m.group(1), m.group(2), float(m.group(3))
        node: Any = doc
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ValueError(f"--fail-if {gate!r}: no metric {path!r} in the analysis (see docs/cli.md)")
            node = node[part]
        if node is None:  # a figure the run cannot know: the gate fails closed, and says why
            why = (doc.get("unknown") or {}).get(path, "not measured in this run")
            crossed.append(f"{path} is unknown: {why}")
            continue
        if isinstance(node, bool) or not isinstance(node, (int, float)):
            raise ValueError(f"--fail-if {gate!r}: {path!r} is not a number")
        if ops[op](node, value):
            crossed.append(f"{path} = {node:g} {op} {value:g}")
    return crossed
