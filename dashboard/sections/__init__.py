"""The dashboard's sections, in page order. Each is one module with its layout, callbacks and
figures:

* ``NAME``: its key in ``Dashboard.sections``;
* ``layout(board) -> list``: its components (a section card; none when it has nothing to show);
* ``register(app, board)``: wires its callbacks; what it returns goes to ``board.sections[NAME]``;
* optionally ``prepare(board, index)`` (first-view work started as the page is requested) and
  ``warm_up()`` (build a tiny figure once, so plotly's validators are loaded before a request).

Sections listen to the frame's "run-select" value, or to the "rest-request" store (the
timeline section fills it once the timeline is painted). A new section is a new module and
one line below.
"""

from __future__ import annotations

from accelscope.dashboard.sections import compare, kernels, memory, metrics, overview, ranks, steps, timeline

SECTIONS = (
    overview,
    timeline,
    metrics,
    memory,
    ranks,
    kernels,
    steps,
    compare,
)
