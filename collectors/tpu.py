"""TPU metrics from libtpu's runtime metrics service, sampled in a background thread.

The service runs inside libtpu, in the process that drives the TPU (JAX, PyTorch/XLA,
TensorFlow), and answers gRPC on ``localhost:8431``; every call goes through
:mod:`accelscope.collectors.libtpu`, with a short deadline, so the training thread never
waits on it (only ``start``, on entry to ``accelscope.profile``, asks it once).

Counters, per device ``tpu:N`` where N is the ``device-id`` libtpu gives each data point:

* ``tpu_duty_cycle_percent`` - ``tpu.runtime.tensorcore.dutycycle.percent``: share of
  time the TensorCores were busy, per chip;
* ``hbm_used_bytes`` - ``tpu.runtime.hbm.memory.usage.bytes``;
* ``hbm_total_bytes`` - ``tpu.runtime.hbm.memory.total.bytes``.

On TPU v2/v3 (two TensorCores per chip) libtpu reports HBM per core and the duty cycle
per chip, so there ``tpu:N`` is core N for the HBM counters and chip N for the duty cycle.

Failures, as in the NVML collector: nothing answering at ``start`` (connection refused, no
answer within the deadline, no metric exported) raises ``CollectorUnavailable`` with a
one-line reason; a metric the service does not export is recorded null once per device
and not asked again, while the others go on; a call that fails or answers with bytes
that do not decode gives null samples; the service going away (connection refused, or
three samples in a row without any answer) is recorded once per device (counter
``tpu_lost`` = 1, ``meta["tpu_lost"]``), after which the service is probed with backoff
(1 s doubling to 30 s) and, when it answers again, ``tpu_lost`` = 0 is recorded and
sampling resumes.

The address: the ``address`` argument, else ``$ACCELSCOPE_TPU_METRICS_ADDR``, else
``localhost:<first port of $TPU_RUNTIME_METRICS_PORTS>``, else ``localhost:8431``.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from pathlib import Path
from typing import Any

from accelscope.collectors import libtpu
from accelscope.collectors.base import CollectorUnavailable, SamplerCollector
from accelscope.collectors.libtpu import Lost, NotSupported, TimedOut, is_na

log = logging.getLogger("accelscope")

ENV_ADDRESS = "ACCELSCOPE_TPU_METRICS_ADDR"
#: counter name -> libtpu metric name, in the order they are asked for.
COUNTERS: dict[str, str] = {
    "tpu_duty_cycle_percent": libtpu.DUTY_CYCLE_PERCENT,
    "hbm_used_bytes": libtpu.HBM_USAGE_BYTES,
    "hbm_total_bytes": libtpu.HBM_TOTAL_BYTES,
}
#: Counters that do not change while a process runs, asked once every this many samples
#: (each metric is one gRPC round trip: this keeps the sampler under 1 % of a core at 10 Hz).
EVERY_NTH_SAMPLE = {"hbm_total_bytes": 20}
#: Samples in a row in which no call got an answer before the service counts as lost.
SILENT_SAMPLES_LOST = 3
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0

# PCI ids of Cloud TPU chips (vendor Google), as tpu-info's device table lists them.
GOOGLE_PCI_VENDOR = "0x1ae0"
TPU_PCI_DEVICES = frozenset({"0x0027", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076"})


def default_address() -> str:
    """``$ACCELSCOPE_TPU_METRICS_ADDR``, else the first port of ``$TPU_RUNTIME_METRICS_PORTS``
    (libtpu's own setting) on localhost, else ``localhost:8431``."""
    explicit = os.environ.get(ENV_ADDRESS, "").strip()
    if explicit:
        return explicit
    ports = os.environ.get("TPU_RUNTIME_METRICS_PORTS", "").split(",")
    first = ports[0].strip()
    if first.isdigit():
        return f"localhost:{first}"
    return libtpu.DEFAULT_ADDRESS


def tpu_present(sys_pci: str = "/sys/bus/pci/devices", dev: str = "/dev") -> bool:
    """A cheap guess (no gRPC, no network) whether this machine has a TPU worth asking:
    ``$ACCELSCOPE_TPU_METRICS_ADDR`` is set, a Cloud TPU chip is on the PCI bus, or a
    ``/dev/accelN`` node (TPU v2-v4) exists. Never raises."""
    try:
        if os.environ.get(ENV_ADDRESS, "").strip():
            return True
        for path in glob.glob(os.path.join(sys_pci, "*")):
            try:
                if Path(path, "vendor").read_text().strip() != GOOGLE_PCI_VENDOR:
                    continue
                if Path(path, "device").read_text().strip() in TPU_PCI_DEVICES:
                    return True
            except OSError:
                continue
        return bool(glob.glob(os.path.join(dev, "accel[0-9]*")))
    except Exception:
        return False


class TpuCollector(SamplerCollector):
    """Samples libtpu's runtime metrics (10 Hz default); see the module doc.

    ``timeout_s`` is the deadline of every call (the sampler thread waits at most
    ``3 * timeout_s`` per sample; ``start`` at most ``4 * timeout_s``).
    """

    name = "tpu"

    def __init__(self, interval_s: float = 0.1, *, address: str | None = None, timeout_s: float = 0.5):
        super().__init__(interval_s)
        if timeout_s <= 0:
            raise ValueError(f"{self.name}: timeout_s must be > 0 s, got {timeout_s}")
        self.address = address or default_address()
        self.timeout_s = timeout_s
        self.devices: list[int] = []
        self.skipped: dict[str, str] = {}  # counter -> why it is not asked
        self.lost = False
        self._client: Any = None
        self._silent = 0
        self._sample_no = 0
        self._backoff_s = BACKOFF_START_S
        self._next_probe = 0.0

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, ctx) -> None:
        client = libtpu.connect(self.address, self.timeout_s)
        if is_na(client):
            raise CollectorUnavailable(client.reason)
        self._client = client
        try:
            found = self._probe()
            self.ctx = ctx
            t = ctx.now_ns()
            ctx.writer.update_meta(
                tpu_metrics_address=self.address,
                tpu_devices=[self._describe(n, found) for n in self.devices],
            )
            for counter in list(self.skipped):
                self._write_null_once(counter, t)
            super().start(ctx)
        except BaseException:
            self._release()
            raise

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self._release()

    def _release(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _probe(self) -> dict[str, dict[int, float | None]]:
        """Asks every metric once; raises CollectorUnavailable when nothing usable answers."""
        where = f"TPU runtime metrics at {self.address}"
        supported = self._client.supported()
        if isinstance(supported, (Lost, TimedOut)):
            raise CollectorUnavailable(f"no {where}: {supported.reason}")
        found: dict[str, dict[int, float | None]] = {}
        failures: list[str] = []
        for counter, metric in COUNTERS.items():
            if isinstance(supported, set) and metric not in supported:
                self.skipped[counter] = f"{metric} is not in the service's supported metrics"
                continue
            got = self._client.get(metric)
            if isinstance(got, (Lost, TimedOut)):
                raise CollectorUnavailable(f"no {where}: {got.reason}")
            if isinstance(got, NotSupported):
                self.skipped[counter] = f"{metric}: {got.reason}"
            elif is_na(got):
                failures.append(f"{metric}: {got.reason}")
            else:
                found[counter] = got
        if not found:
            why = "; ".join(failures) or f"it exports none of {', '.join(COUNTERS.values())}"
            raise CollectorUnavailable(f"{where} unusable: {why}")
        self.devices = sorted({n for values in found.values() for n in values})
        return found

    def _describe(self, n: int, found: dict[str, dict[int, float | None]]) -> dict[str, Any]:
        total = found.get("hbm_total_bytes", {}).get(n)
        return {"id": f"tpu:{n}", "device_id": n, "hbm_total_bytes": None if total is None else int(total)}

    # -- sampling -------------------------------------------------------------------------
    def sample(self) -> None:
        if self._client is None:
            return
        if self.lost:
            self._retry()
            return
        ctx = self.ctx
        t = ctx.now_ns()
        rows: list[tuple[str, str, int, float | None, int]] = []
        asked = answered = 0
        self._sample_no += 1
        for counter, metric in COUNTERS.items():
            if counter in self.skipped:
                continue
            if (self._sample_no - 1) % EVERY_NTH_SAMPLE.get(counter, 1):
                continue
            if self._stop.is_set():  # stop() is waiting: do not hold it up for a deadline
                break
            got = self._client.get(metric)
            asked += 1
            if isinstance(got, Lost):
                self._flush(rows)
                self._lose(t, got.reason)
                return
            if isinstance(got, NotSupported):
                answered += 1
                self.skipped[counter] = f"{metric}: {got.reason}"
                ctx.writer.update_meta(tpu_unsupported_metrics=dict(self.skipped))
                rows.extend((counter, f"tpu:{n}", t, None, ctx.rank) for n in self.devices)
                continue
            if is_na(got):
                if not isinstance(got, TimedOut):
                    answered += 1
                rows.extend((counter, f"tpu:{n}", t, None, ctx.rank) for n in self.devices)
                continue
            answered += 1
            new = [n for n in got if n not in self.devices]
            if new:
                self.devices = sorted(set(self.devices) | set(new))
            for n in self.devices:
                rows.append((counter, f"tpu:{n}", t, got.get(n), ctx.rank))
        self._flush(rows)
        if asked and not answered:
            self._silent += 1
            if self._silent >= SILENT_SAMPLES_LOST:
                self._lose(t, f"no answer from {self.address} within {self.timeout_s:g} s, {self._silent} samples in a row")
        else:
            self._silent = 0

    def _flush(self, rows: list[tuple]) -> None:
        add = self.ctx.writer.add_counter
        for row in rows:
            add(row)

    def _write_null_once(self, counter: str, t: int) -> None:
        ctx = self.ctx
        ctx.writer.update_meta(tpu_unsupported_metrics=dict(self.skipped))
        for n in self.devices:
            ctx.writer.add_counter((counter, f"tpu:{n}", t, None, ctx.rank))

    def _lose(self, t: int, reason: str) -> None:
        ctx = self.ctx
        self.lost = True
        self._silent = 0
        self._backoff_s = BACKOFF_START_S
        self._next_probe = time.monotonic() + self._backoff_s
        for n in self.devices:
            ctx.writer.add_counter(("tpu_lost", f"tpu:{n}", t, 1.0, ctx.rank))
        ctx.writer.update_meta(tpu_lost={"reason": reason, "time_ns": t})
        log.warning("accelscope: TPU metrics service went away (%s); retrying with backoff, training continues", reason)

    def _retry(self) -> None:
        """While lost: one cheap call when the backoff has passed."""
        now = time.monotonic()
        if now < self._next_probe:
            return
        # A fresh channel: the old one may still be in gRPC's own reconnect backoff.
        fresh = libtpu.connect(self.address, self.timeout_s)
        if not is_na(fresh):
            self._release()
            self._client = fresh
        metric = next((m for c, m in COUNTERS.items() if c not in self.skipped), libtpu.DUTY_CYCLE_PERCENT)
        got = self._client.get(metric)
        if is_na(got) and not isinstance(got, NotSupported):
            self._backoff_s = min(BACKOFF_MAX_S, self._backoff_s * 2)
            self._next_probe = time.monotonic() + self._backoff_s
            return
        ctx = self.ctx
        t = ctx.now_ns()
        self.lost = False
        for n in self.devices:
            ctx.writer.add_counter(("tpu_lost", f"tpu:{n}", t, 0.0, ctx.rank))
        ctx.writer.update_meta(tpu_recovered_ns=t)
        log.info("accelscope: TPU metrics service at %s answers again; sampling resumes", self.address)
