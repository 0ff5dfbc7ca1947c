"""The one fake of the CUDA hardware boundary: a scripted caching allocator behind the few
``torch.cuda`` functions accelscope calls (this machine has no GPU). Everything above them,
the training loop, ``accelscope.profile``, the run and ``analyze``, is real.

Install it with the ``fake_cuda`` fixture (tests/conftest.py); the test's loop then says
what the device holds: ``fake_cuda.allocate(n)`` / ``fake_cuda.free(n)``, as ``train`` does.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import accelscope

MIB = 2**20
SEGMENT_BYTES = 2 * 2**20  # the caching allocator reserves whole segments; this one never gives them back
TOTAL_BYTES = 80 * 2**30


class FakeCudaAllocator:
    """One CUDA device's allocator: allocated and reserved bytes now and their peaks since
    the last reset, as ``torch.cuda.memory_stats_as_nested_dict`` reports them."""

    def __init__(self, device: int = 0):
        self.device = device
        self.initialized = True  # the program has initialised CUDA
        self.allocated = self.reserved = self.peak_allocated = self.peak_reserved = 0
        self.reads: list[int] = []  # the device index of every statistics read
        self.resets: list[int] = []  # of every peak reset
        self.fail_after: int | None = None  # reads that succeed before every later one raises

    def allocate(self, nbytes: int) -> None:
        self.allocated += nbytes
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        if self.allocated > self.reserved:
            self.reserved = -(-self.allocated // SEGMENT_BYTES) * SEGMENT_BYTES
            self.peak_reserved = max(self.peak_reserved, self.reserved)

    def free(self, nbytes: int) -> None:
        self.allocated -= nbytes

    # -- what torch.cuda says ---------------------------------------------------------------
    def memory_stats_as_nested_dict(self, device: int | None = None) -> dict:
        if not self.initialized:
            return {}
        self.reads.append(device)
        if self.fail_after is not None and len(self.reads) > self.fail_after:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return {
            "allocated_bytes": {"all": {"current": self.allocated, "peak": self.peak_allocated, "allocated": 0, "freed": 0}},
            "reserved_bytes": {"all": {"current": self.reserved, "peak": self.peak_reserved, "allocated": 0, "freed": 0}},
            "num_ooms": 0,
        }

    def reset_peak_memory_stats(self, device: int | None = None) -> None:
        self.resets.append(device)
        self.peak_allocated, self.peak_reserved = self.allocated, self.reserved

    def install(self, monkeypatch, cuda) -> None:
        """Put this allocator behind ``cuda`` (the real ``torch.cuda`` module)."""
        props = SimpleNamespace(name="Fake GPU", total_memory=TOTAL_BYTES)
        for name, fn in {
            "is_available": lambda: True,
            "is_initialized": lambda: self.initialized,
            "device_count": lambda: 1,
            "current_device": lambda: self.device,
            "get_device_properties": lambda i: props,
            "memory_stats_as_nested_dict": self.memory_stats_as_nested_dict,
            "reset_peak_memory_stats": self.reset_peak_memory_stats,
        }.items():
            monkeypatch.setattr(cuda, name, fn)


def train(out, fake, steps: int = 6, *, kept: int = MIB, transient=lambda step: 4 * MIB, mode: str = "light", **kw):
    """A real CPU training loop (linear model, SGD) whose step ``i`` makes the fake device keep
    ``kept`` more bytes and hold ``transient(i)`` more for a moment (an activation), as a CUDA
    loop would. Returns the profiler and what the device held at each step's end and at most."""
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(16, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 16), torch.randn(8, 4)
    held, peaks = [], []
    with accelscope.profile(out, mode=mode, framework="torch", live=False, **kw) as prof:
        for step in prof.iter(range(steps)):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            fake.allocate(kept)
            fake.allocate(transient(step))
            loss.backward()
            opt.step()
            peaks.append(fake.allocated)
            fake.free(transient(step))
            held.append(fake.allocated)
            prof.step()
    return prof, held, peaks
