"""Keras ``model.fit`` under accelscope: ``accelscope.keras.ProfileCallback``.

Keras 3 marks nothing per step that a profiler can use (only "Profiled batch" in TF
traces), so the callback marks steps itself: each training batch is one step, from
``on_train_batch_begin`` to ``on_train_batch_end``, so validation and epoch-end work stay
out of steps. With the TensorFlow backend each step is also wrapped in the TF profiler's
step marker (``Trace("train", step_num=N, _r=1)``), so XProf and TensorBoard read the
same steps from the trace. Evaluation batches during ``fit`` are recorded as annotations.

Two ways to use it::

    model.fit(ds, callbacks=[accelscope.keras.ProfileCallback("runs/exp1")])   # owns the run

    with accelscope.profile("runs/exp1") as prof:                              # inside a run
        model.fit(ds, callbacks=[accelscope.keras.ProfileCallback(prof)])

With ``steps_per_execution=N`` Keras calls batch callbacks once per N batches, so a step
is N batches. Input waits come from the TF profiler's ``IteratorGetNext`` ops, i.e. from
the traced windows of ``mode="full"``: Python never sees the iterator inside ``fit``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from accelscope.api import Profiler, profile
from accelscope.errors import require
from accelscope.traces import schema as S

log = logging.getLogger("accelscope")
keras = require("keras", "tf", "accelscope.keras")


class ProfileCallback(keras.callbacks.Callback):
    """Marks each training batch as an accelscope step.

    ``target`` is a running :class:`~accelscope.api.Profiler`, or a run directory: then
    the callback starts a profiler when training begins and stops it when training ends,
    passing ``profile_kwargs`` (``mode``, ``schedule``, ...) to :func:`accelscope.profile`.
    """

    def __init__(self, target: Profiler | str | os.PathLike[str], **profile_kwargs: Any):
        super().__init__()
        if isinstance(target, Profiler):
            if profile_kwargs:
                raise ValueError("profile options go to accelscope.profile(), not to a callback given a running profiler")
            self.prof, self._owns = target, False
        elif isinstance(target, (str, os.PathLike)):
            self.prof, self._owns = profile(target, **{"framework": "tensorflow", **profile_kwargs}), True
        else:
            raise ValueError(f"ProfileCallback takes a Profiler or a run directory, got {type(target).__name__}")
        self._trace = None
        self._trace_ok = "tensorflow" in sys.modules
        self._test_start_ns: int | None = None

    # -- run lifecycle (only when the callback owns the profiler) ------------------------
    def on_train_begin(self, logs=None) -> None:
        if self._owns:
            self.prof.start()

    def on_train_end(self, logs=None) -> None:
        self._end_trace()
        if self._owns:
            self.prof.stop()

    # -- steps ---------------------------------------------------------------------------------
    def on_train_batch_begin(self, batch: int, logs=None) -> None:
        self.prof.start_step()
        if self._trace_ok:
            try:
                import tensorflow as tf

                self._trace = tf.profiler.experimental.Trace("train", step_num=self.prof.steps, _r=1)
                self._trace.__enter__()
            except Exception as exc:  # the marker is a nicety: never let it stop training
                self._trace, self._trace_ok = None, False
                log.info("accelscope: TF step markers off: %s", exc)

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        self._end_trace()
        self.prof.step()

    def _end_trace(self) -> None:
        if self._trace is not None:
            trace, self._trace = self._trace, None
            try:
                trace.__exit__(None, None, None)
            except Exception:
                self._trace_ok = False

    # -- evaluation inside fit ------------------------------------------------------------
    def on_test_batch_begin(self, batch: int, logs=None) -> None:
        self._test_start_ns = self.prof.now_ns()

    def on_test_batch_end(self, batch: int, logs=None) -> None:
        if self._test_start_ns is not None and self.prof._active:
            self.prof._record(S.ANNOTATION, "keras evaluate batch", self._test_start_ns, self.prof.now_ns())
        self._test_start_ns = None


__all__ = ["ProfileCallback"]
