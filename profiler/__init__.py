"""accelscope: find out why your accelerator sat idle.

    import accelscope
    with accelscope.profile("runs/exp1") as prof:
        for batch in prof.iter(loader):
            train_step(batch); prof.step()
"""

__version__ = "0.1.0"

from accelscope.api import Profiler, profile  # noqa: E402
from accelscope.errors import AccelscopeError, MissingExtraError, RunFormatError  # noqa: E402
from accelscope.schedule import Schedule  # noqa: E402
from accelscope.traces.run import Run, open_run  # noqa: E402

__all__ = ["profile", "Profiler", "Schedule", "Run", "open_run", "AccelscopeError", "RunFormatError", "MissingExtraError", "__version__"]
