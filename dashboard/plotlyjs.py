"""The plotly.js the dashboard and its reports draw with.

plotly.js's "basic" bundle (scatter, bar and pie traces: all the dashboard draws), from the
npm package ``plotly.js-basic-dist-min`` (MIT licence, ``assets/plotly.js-LICENSE.txt``),
kept in ``assets/``. It is a quarter of the full bundle that Dash and plotly.py ship
(1.2 MB against 4.8 MB): Chromium compiles and runs it in ~0.25 s instead of ~1.5 s
on this project's 2-core machines, which is most of what a first page load waits for.
Dash serves it from the assets folder; dcc.Graph then finds ``window.Plotly`` and does not
load its own. ``docs/dashboard.md`` says how to update it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
BUNDLE = ASSETS / "plotly-basic.min.js"
# The file as npm's plotly.js-basic-dist-min@4.1.1 ships it (package integrity
# sha512-1oNF8PeQx2hv/y7tqEVWKD3JGwn/MGEMQ8mL9HUwsaqG9FGy/OU5FHUHvzqbqxN4mnwZGI9abTiE775C4kkjMQ==).
BUNDLE_SHA256 = "99784e3abfb07b142a15e521a439e6d9addceadb3f79553fd24c72774f0649ba"
# The traces this bundle holds; a figure with any other type would draw nothing.
TRACE_TYPES = frozenset({"scatter", "bar", "pie"})


@lru_cache(maxsize=1)
def bundle_text() -> str:
    """The bundle's JavaScript (for reports, which embed it)."""
    return BUNDLE.read_text(encoding="utf-8")


def bundle_version() -> str:
    """The bundle's plotly.js version, from its licence header ("v4.1.1" -> "4.1.1")."""
    with BUNDLE.open(encoding="utf-8") as f:
        head = f.read(200)
    match = re.search(r"plotly\.js \(basic - minified\) v(\d+\.\d+\.\d+)", head)
    if not match:
        raise ValueError(f"{BUNDLE} is not plotly.js's basic bundle (no version in its header)")
    return match.group(1)


def script_tag() -> str:
    """The bundle as an inline ``<script>`` element, for self-contained HTML."""
    return f'<script type="text/javascript">{bundle_text()}</script>'
