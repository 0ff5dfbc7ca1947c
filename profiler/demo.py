"""``accelscope demo``: a real small CNN trained on the CPU, fed by a DataLoader whose
per-batch cost is set by ``loader_delay_ms``, profiled end to end.

The delay stands for an expensive input pipeline (decoding, augmentation). With the
default settings (``num_workers=0``, 60 ms per batch) the loop is input-bound; with
``loader_delay_ms=0`` and ``workers=2`` it is not.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from accelscope.errors import require

DEFAULT_STEPS = 60
DEFAULT_DELAY_MS = 60.0
DEFAULT_WORKERS = 0
BATCH_SIZE = 64
IMAGE_SIZE = 32
CLASSES = 10


def _build(delay_ms: float, steps: int, workers: int):
    torch = require("torch", "torch", "accelscope demo")
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    class SyntheticBatches(Dataset):
        """Whole batches of random images; each costs ``delay_ms`` to "load"."""

        def __len__(self) -> int:
            return steps

        def __getitem__(self, index: int):
            if delay_ms > 0:
                time.sleep(delay_ms / 1000.0)
            g = torch.Generator().manual_seed(index)
            # uint8 pixels, as a decoded image batch would be; normalised in the step.
            x = torch.randint(0, 256, (BATCH_SIZE, 3, IMAGE_SIZE, IMAGE_SIZE), generator=g, dtype=torch.uint8)
            y = torch.randint(0, CLASSES, (BATCH_SIZE,), generator=g)
            return x, y

    model = nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, CLASSES),
    )
    loader = DataLoader(SyntheticBatches(), batch_size=None, shuffle=False, num_workers=workers)
    return torch, model, loader


def run_demo(
    out_dir: str | Path = "runs",
    steps: int = DEFAULT_STEPS,
    loader_delay_ms: float = DEFAULT_DELAY_MS,
    workers: int = DEFAULT_WORKERS,
    mode: str = "full",
    name: str | None = None,
    progress: bool = True,
) -> Path:
    """Train the demo CNN for ``steps`` steps under accelscope; return the run directory."""
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    if loader_delay_ms < 0:
        raise ValueError(f"--loader-delay-ms must be >= 0, got {loader_delay_ms}")
    if workers < 0:
        raise ValueError(f"--workers must be >= 0, got {workers}")
    import accelscope

    torch, model, loader = _build(loader_delay_ms, steps, workers)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    run_name = name or datetime.now().strftime("demo-%Y%m%d-%H%M%S")
    with accelscope.profile(Path(out_dir) / run_name, mode=mode) as prof:
        for i, (x, y) in enumerate(prof.iter(loader)):
            with prof.region("forward"):
                loss = loss_fn(model(x.float().div_(255.0)), y)
            with prof.region("backward"):
                opt.zero_grad(set_to_none=True)
                loss.backward()
            with prof.region("optimizer"):
                opt.step()
            prof.step()
            if progress and (i + 1) % 10 == 0:
                print(f"  step {i + 1}/{steps}  loss {loss.item():.3f}", flush=True)
    return prof.run_dir
