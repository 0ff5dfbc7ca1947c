"""The accelscope web dashboard: one page per set of recorded runs.

    from accelscope.dashboard.app import serve
    serve(["runs/exp1", "runs/exp2"])          # http://127.0.0.1:8050

It reads run directories only (the trace model and the analyzer), never collectors.
Dash and Plotly are optional (``pip install 'accelscope[dashboard]'``): importing this
package works without them; ``create_app``/``serve`` say which extra is missing.
"""

from __future__ import annotations

__all__ = ["create_app", "serve"]


def __getattr__(name: str):
    if name in __all__:
        from accelscope.dashboard import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
