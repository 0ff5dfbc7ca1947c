"""A real tf.distribute job: MultiWorkerMirroredStrategy, 2+ workers on this CPU, one slow.

Run one process per worker: ``python mwms_job.py OUT INDEX PORT0,PORT1[,...] [options]``;
the script sets ``TF_CONFIG`` itself (workers on localhost). Every worker records ``OUT``
with ``accelscope.profile`` in full mode (the TF profiler in a window of steps) and writes
what it injected, measured by itself, to ``OUT/../truth-worker-N.json``: per step its own
start and end on the epoch clock, when its gradients were ready for their all-reduce, and
how long its input pipeline slept. The straggler's
pipeline sleeps ``--delay-ms`` per batch in Python, outside the tf.function, so the other
workers wait for it inside ``CollectiveReduceV2``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", help="run directory every worker records into")
    ap.add_argument("index", type=int, help="this worker's index in the cluster")
    ap.add_argument("ports", help="comma-separated localhost ports, one per worker")
    ap.add_argument("--steps", type=int, default=14)
    ap.add_argument("--straggler", type=int, default=-1, help="worker whose input pipeline is slow (-1: none)")
    ap.add_argument("--delay-ms", type=float, default=20.0)
    args = ap.parse_args()

    workers = [f"localhost:{p}" for p in args.ports.split(",")]
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": args.index}})
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import numpy as np
    import tensorflow as tf

    import accelscope
    from accelscope.schedule import Schedule

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    global_batch = 64

    def make_ds(ctx):
        x = tf.random.stateless_normal((4096, 32), seed=(1, 2))
        y = tf.reduce_sum(x, axis=1, keepdims=True)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        return ds.batch(ctx.get_per_replica_batch_size(global_batch)).prefetch(2)

    batches = iter(strategy.distribute_datasets_from_function(make_ds))
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input((32,)), tf.keras.layers.Dense(256, activation="relu"),
                                     tf.keras.layers.Dense(256, activation="relu"), tf.keras.layers.Dense(1)])
        opt = tf.keras.optimizers.SGD(0.01)

    arrived: list[int] = []

    def arrive():
        arrived.append(time.time_ns())
        return np.int64(0)

    @tf.function
    def train_step(batch):
        def step_fn(b):
            x, y = b
            with tf.GradientTape() as tape:
                loss = tf.nn.compute_average_loss(tf.square(model(x, training=True) - y), global_batch_size=global_batch)
            grads = tape.gradient(loss, model.trainable_variables)
            # Stamp the moment the gradients are ready: their all-reduce waits for the stamp.
            stamp = tf.numpy_function(arrive, [], tf.int64, stateful=True)
            with tf.control_dependencies([stamp]):
                grads = [tf.identity(g) for g in grads]
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(step_fn, args=(batch,)), axis=None)

    slept: list[int] = []

    def loader():
        while True:
            if args.index == args.straggler:
                t0 = time.time_ns()
                time.sleep(args.delay_ms / 1000)
                slept.append(time.time_ns() - t0)
            else:
                slept.append(0)
            yield next(batches)

    steps: list[tuple[int, int]] = []
    schedule = Schedule(skip_first=3, wait=0, warmup=1, active=args.steps - 5, repeat=1)
    with accelscope.profile(args.out, mode="full", framework="tensorflow", schedule=schedule, live=False) as prof:
        for i, batch in enumerate(prof.iter(loader())):
            start = time.time_ns()
            float(train_step(batch))
            prof.step()
            steps.append((start, time.time_ns()))
            if i + 1 == args.steps:
                break
    truth = {"steps": steps, "arrived_ns": arrived[: len(steps)], "slept_ns": slept[: len(steps)], "run_dir": str(prof.run_dir)}
    Path(args.out).parent.joinpath(f"truth-worker-{args.index}.json").write_text(json.dumps(truth))


if __name__ == "__main__":
    main()
