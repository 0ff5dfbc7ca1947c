"""``accelscope demo``: a real small CNN trained on the CPU, fed by an input pipeline
whose per-batch cost is set by ``loader_delay_ms``, profiled end to end.

The delay stands for an expensive input pipeline (decoding, augmentation). With the
default settings (no workers, 60 ms per batch) the loop is input-bound; with
``loader_delay_ms=0`` and ``workers=2`` it is not.

``framework="torch"`` feeds the CNN from a DataLoader (``workers`` = ``num_workers``);
``framework="tensorflow"`` trains the same CNN (same layers, batch, optimizer) in Keras
from tf.data (``workers`` = the map's ``num_parallel_calls``, plus a prefetch), either in
a custom loop with a ``tf.function`` step (``keras_fit=False``, input waits timed by
``prof.iter`` on every step, as in the PyTorch demo) or through ``model.fit`` with
``accelscope.keras.ProfileCallback``. Both write the same run format, so
``accelscope diff`` compares them.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import numpy as np

from accelscope.errors import require

DEFAULT_STEPS = 60
DEFAULT_DELAY_MS = 60.0
DEFAULT_WORKERS = 0
FRAMEWORKS = ("torch", "tensorflow")
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


def _build_tf(delay_ms: float, steps: int, workers: int):
    """The PyTorch demo's CNN and input pipeline in Keras and tf.data (channels last)."""
    tf = require("tensorflow", "tf", "accelscope demo --framework tensorflow")
    keras = tf.keras

    def load(index):
        """One whole batch of uint8 images; costs ``delay_ms`` to "load"."""
        if delay_ms > 0:
            time.sleep(delay_ms / 1000.0)
        rng = np.random.default_rng(int(index))
        x = rng.integers(0, 256, (BATCH_SIZE, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        y = rng.integers(0, CLASSES, (BATCH_SIZE,), dtype=np.int64)
        return x, y

    def load_op(index):
        x, y = tf.numpy_function(load, [index], (tf.uint8, tf.int64), stateful=False)
        x.set_shape((BATCH_SIZE, IMAGE_SIZE, IMAGE_SIZE, 3))
        y.set_shape((BATCH_SIZE,))
        return x, y

    ds = tf.data.Dataset.range(steps)
    if workers:
        ds = ds.map(load_op, num_parallel_calls=workers, deterministic=True).prefetch(workers)
    else:
        # Sequential, no prefetch: like a DataLoader with num_workers=0. tf.data would
        # otherwise parallelise the map and inject a prefetch on its own.
        ds = ds.map(load_op)
        options = tf.data.Options()
        options.experimental_optimization.map_parallelization = False
        options.experimental_optimization.inject_prefetch = False
        ds = ds.with_options(options)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3)),
        layers.Rescaling(1.0 / 255.0),
        layers.Conv2D(64, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(128, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dense(CLASSES),
    ])
    return tf, keras, model, ds


def _train_tf(prof, delay_ms: float, steps: int, workers: int, keras_fit: bool, progress: bool) -> None:
    tf, keras, model, ds = _build_tf(delay_ms, steps, workers)
    opt = keras.optimizers.SGD(learning_rate=0.05, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if keras_fit:
        from accelscope.keras import ProfileCallback

        model.compile(optimizer=opt, loss=loss_fn)
        model.fit(ds, epochs=1, steps_per_epoch=steps, shuffle=False, callbacks=[ProfileCallback(prof)], verbose=2 if progress else 0)
        return

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    for i, (x, y) in enumerate(prof.iter(ds)):
        with prof.region("train_step"):
            loss = train_step(x, y)
        prof.step()
        if progress and (i + 1) % 10 == 0:
            print(f"  step {i + 1}/{steps}  loss {float(loss):.3f}", flush=True)


def run_demo(
    out_dir: str | Path = "runs",
    steps: int = DEFAULT_STEPS,
    loader_delay_ms: float = DEFAULT_DELAY_MS,
    workers: int = DEFAULT_WORKERS,
    mode: str = "full",
    name: str | None = None,
    progress: bool = True,
    framework: str = "torch",
    keras_fit: bool = False,
) -> Path:
    """Train the demo CNN for ``steps`` steps under accelscope; return the run directory."""
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    if loader_delay_ms < 0:
        raise ValueError(f"--loader-delay-ms must be >= 0, got {loader_delay_ms}")
    if workers < 0:
        raise ValueError(f"--workers must be >= 0, got {workers}")
    if framework not in FRAMEWORKS:
        raise ValueError(f"--framework must be one of {', '.join(FRAMEWORKS)}, got {framework!r}")
    if keras_fit and framework != "tensorflow":
        raise ValueError("--keras-fit needs --framework tensorflow")
    import accelscope

    run_name = name or datetime.now().strftime(f"demo{'-tf' if framework == 'tensorflow' else ''}-%Y%m%d-%H%M%S")
    if framework == "tensorflow":
        require("tensorflow", "tf", "accelscope demo --framework tensorflow")
        with accelscope.profile(Path(out_dir) / run_name, mode=mode, framework="tensorflow") as prof:
            _train_tf(prof, loader_delay_ms, steps, workers, keras_fit, progress)
        return prof.run_dir

    torch, model, loader = _build(loader_delay_ms, steps, workers)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    with accelscope.profile(Path(out_dir) / run_name, mode=mode, framework="torch") as prof:
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
