"""Trace model, run directories, importers and exporters."""

from accelscope.traces.run import Run, RunWriter, open_run, write_run

__all__ = ["Run", "RunWriter", "open_run", "write_run"]
