"""`accelscope run`: an unmodified PyTorch script, profiled from the outside."""

import subprocess
import sys
import textwrap

import polars as pl
import pytest

pytest.importorskip("torch", reason="accelscope run profiles PyTorch scripts")

from accelscope.runner import run_script  # noqa: E402
from accelscope.traces.run import Run  # noqa: E402

SCRIPT = textwrap.dedent(
    """
    import sys, time, torch
    from torch.utils.data import DataLoader, TensorDataset
    steps, optimizers, code = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    ds = TensorDataset(torch.randn(steps * 4, 8), torch.randint(0, 2, (steps * 4,)))
    models = [torch.nn.Linear(8, 2) for _ in range(optimizers)]
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    for x, y in DataLoader(ds, batch_size=4):
        time.sleep(0.002)
        for m, o in zip(models, opts):  # a GAN steps two optimizers per iteration
            loss = torch.nn.functional.cross_entropy(m(x), y)
            o.zero_grad(); loss.backward(); o.step()
    if code == 99:
        raise RuntimeError("the script failed")
    if code == 98:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    sys.exit(code)
    """
)


@pytest.fixture()
def script(tmp_path):
    path = tmp_path / "train.py"
    path.write_text(SCRIPT)
    return path


def test_steps_and_input_waits_are_found_and_the_exit_code_kept(script, tmp_path):
    code, run_dir = run_script(str(script), ["7", "1", "3"], tmp_path / "runs")
    assert code == 3
    ev = Run.open(run_dir).events
    assert ev.filter(pl.col("kind") == "step").height == 7
    waits = ev.filter(pl.col("kind") == "input_wait")
    assert waits.height == 8, "seven batches and the final StopIteration"
    assert waits["name"][0].startswith("next(_SingleProcessDataLoaderIter")


def test_two_optimizers_count_one_step_per_iteration(script, tmp_path):
    code, run_dir = run_script(str(script), ["5", "2", "0"], tmp_path / "runs")
    assert code == 0
    assert Run.open(run_dir).events.filter(pl.col("kind") == "step").height == 5


def test_hooks_are_removed_afterwards(script, tmp_path):
    import torch.optim.optimizer as optim_mod
    from torch.utils.data import dataloader

    before = dataloader._BaseDataLoaderIter.__next__
    run_script(str(script), ["2", "1", "0"], tmp_path / "runs")
    assert dataloader._BaseDataLoaderIter.__next__ is before
    assert len(optim_mod._global_optimizer_post_hooks) == 0


def test_cli_keeps_the_exit_code_and_prints_the_run(script, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "accelscope", "run", "--out-dir", str(tmp_path / "runs"), "--", str(script), "3", "1", "99"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "RuntimeError: the script failed" in proc.stderr and "run written to" in proc.stderr
    run = Run.open(tmp_path / "runs" / "train")
    assert run.meta["complete"] and run.events.filter(pl.col("kind") == "step").height == 3


def test_a_script_running_out_of_memory_records_it(script, tmp_path, capsys):
    """accelscope run catches the script's exception itself (to keep its exit code): the
    forensics still happen, and the error is kept as the run's training error."""
    code, run_dir = run_script(str(script), ["3", "1", "98"], tmp_path / "runs")
    assert code == 1 and "OutOfMemoryError" in capsys.readouterr().err
    meta = Run.open(run_dir).meta
    assert (meta["oom"]["step"], meta["oom"]["requested_bytes"]) == (3, 2 * 2**30), "after the 3 optimizer steps"
    assert meta["training_error"].startswith("OutOfMemoryError")


def test_missing_script_is_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "accelscope", "run", "--", str(tmp_path / "nope.py")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no such script" in proc.stderr
