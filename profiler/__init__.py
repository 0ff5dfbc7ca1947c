"""accelscope: find out why your accelerator sat idle.

    import accelscope
    with accelscope.profile("runs/exp1") as prof:
        for batch in prof.iter(loader):
            train_step(batch); prof.step()

The names below load on first use, so that readers of runs (the dashboard, the
analyzer) never import the collectors.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "profile": "accelscope.api",
    "Profiler": "accelscope.api",
    "Schedule": "accelscope.schedule",
    "Run": "accelscope.traces.run",
    "open_run": "accelscope.traces.run",
    "AccelscopeError": "accelscope.errors",
    "RunFormatError": "accelscope.errors",
    "MissingExtraError": "accelscope.errors",
}
# Submodules reachable as attributes after a bare ``import accelscope`` (README's
# ``accelscope.keras.ProfileCallback``), imported only on first use so that
# ``import accelscope`` never pulls in TensorFlow.
_SUBMODULES = frozenset({"keras"})
__all__ = ["profile", "Profiler", "Schedule", "Run", "open_run", "AccelscopeError", "RunFormatError", "MissingExtraError", "__version__"]

if TYPE_CHECKING:
    from accelscope.api import Profiler, profile
    from accelscope.errors import AccelscopeError, MissingExtraError, RunFormatError
    from accelscope.schedule import Schedule
    from accelscope.traces.run import Run, open_run


def __getattr__(name: str) -> Any:
    """Load an exported name or a lazy submodule on first use."""
    if name in _SUBMODULES:
        return importlib.import_module(f"accelscope.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'accelscope' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
