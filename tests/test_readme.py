"""Every README snippet, run as written.

The README's Python and shell blocks are read from README.md itself (not copied here), so a
snippet that changes is tested as it now reads. Each block is run in a temporary directory
exactly as written: a Python snippet after a prelude that defines what it names but leaves
to the reader (``loader``, ``model``, ``opt``, ``ds``), a shell line through bash with the
virtualenv's ``accelscope`` on the PATH, beside the files it names (``runs/exp1`` made by
the usage snippet, ``trace.pt.trace.json.gz`` a copy of a real Kineto trace). Blocks that
need a multi-process launcher or install and serve are skipped with the reason, and the
tests that cover them named.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
VENV_BIN = str(Path(sys.executable).parent)
NW4 = "traces/kineto/tb_plugin/samples/resnet50_num_workers_4/worker0.1623212756351.pt.trace.json.gz"

# The names the snippets use and leave to the reader: a tiny real torch loop whose model
# returns an object with .loss, as Hugging Face models do.
TORCH_PRELUDE = """
from types import SimpleNamespace

import torch


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 1)

    def forward(self, batch):
        x, y = batch
        return SimpleNamespace(loss=torch.nn.functional.mse_loss(self.lin(x), y))


model = Model()
opt = torch.optim.SGD(model.parameters(), lr=0.01)
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 8), torch.randn(64, 1)), batch_size=4)
"""
# A tiny Keras model and tf.data dataset; only `import accelscope`, as the README's first snippet does.
KERAS_PRELUDE = """
import accelscope
import keras
import numpy as np
import tensorflow as tf

model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
model.compile(optimizer="sgd", loss="mse")
ds = tf.data.Dataset.from_tensor_slices((np.random.rand(64, 8).astype("float32"), np.random.rand(64, 1).astype("float32"))).batch(8)
"""

# Every python/sh block of the README, by a line it holds: how it is run, or why it is not.
SKIPPED = {
    "make demo": "installs a virtualenv and serves the demo's dashboard until stopped; `make test` is what CI runs, "
                 "and the demo itself is tests/profiler/test_demo.py",
    'dist.init_process_group("nccl")': "needs NCCL and a multi-process launcher; the same loop under torchrun (gloo) is "
                                       "tests/profiler/test_distributed.py",
    "torchrun --nproc_per_node": "needs a multi-process launcher; torchrun jobs are tests/profiler/test_distributed.py "
                                 "and the ddp_job tests of tests/profiler/test_cli.py",
}
RUN = ('with accelscope.profile("runs/exp1")', "accelscope.keras.ProfileCallback", "accelscope analyze runs/exp1",
       "--cluster tcp://scheduler:8786")


def blocks() -> list[tuple[str, str]]:
    """(language, code) of every ```python and ```sh block of the README."""
    text = README.read_text(encoding="utf-8")
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(python|sh)\n(.*?)^```$", text, re.M | re.S)]


def block(marker: str) -> str:
    found = [code for _, code in blocks() if marker in code]
    assert len(found) == 1, f"README.md: {len(found)} blocks hold {marker!r}"
    return found[0]


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "")}


def run_python(code: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    script = cwd / "snippet.py"
    script.write_text(code, encoding="utf-8")
    return subprocess.run([sys.executable, str(script)], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def shell_lines(marker: str) -> list[str]:
    """The commands of a shell block, one per line, as written (comments are bash's to drop)."""
    return [line for line in block(marker).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_every_snippet_is_run_or_skipped_for_a_reason():
    markers = (*RUN, *SKIPPED)
    for lang, code in blocks():
        held = [m for m in markers if m in code]
        assert len(held) == 1, f"a README {lang} block is neither run nor skipped by tests/test_readme.py:\n{code}"
    for m in markers:
        block(m)


@pytest.mark.parametrize("marker", list(SKIPPED))
def test_snippets_that_need_a_launcher_or_serve_forever(marker):
    block(marker)
    pytest.skip(SKIPPED[marker])


@pytest.fixture(scope="module")
def usage(tmp_path_factory):
    """The usage snippet run as written in a fresh directory: (directory, its run)."""
    pytest.importorskip("torch", reason="the torch extra runs the usage snippet")
    cwd = tmp_path_factory.mktemp("readme")
    proc = run_python(TORCH_PRELUDE + "\n" + block(RUN[0]), cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, proc


def test_the_usage_snippet_profiles_a_torch_loop(usage):
    from accelscope.traces.run import Run

    cwd, proc = usage
    run = Run.open(cwd / "runs/exp1")
    assert proc.stdout.strip().splitlines()[-1] == "runs/exp1"
    assert run.meta["complete"] and run.meta["steps"] == 16  # 64 samples in batches of 4
    assert run.events.filter(run.events["name"] == "forward").height == 16, "prof.region('forward') around every step"


@pytest.mark.slow
def test_the_keras_snippet_marks_every_batch_as_a_step(tmp_path):
    pytest.importorskip("tensorflow", reason="the tf extra runs the Keras snippet")
    from accelscope.traces.run import Run

    proc = run_python(KERAS_PRELUDE + "\n" + block(RUN[1]), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = Run.open(tmp_path / "runs/exp2")
    assert run.meta["complete"] and run.meta["steps"] == 24  # 3 epochs of 8 batches


@pytest.fixture(scope="module")
def cli_dir(usage, shared_dir):
    """Where the CLI snippet runs: runs/exp1 from the usage snippet, and trace.pt.trace.json.gz,
    a real Kineto trace (ResNet-50, num_workers=4: 1.0 % input wait, so the gate holds)."""
    cwd, _ = usage
    shutil.copy(shared_dir / NW4, cwd / "trace.pt.trace.json.gz")
    return cwd


def _line(word: str) -> str:
    found = [line for line in shell_lines(RUN[2]) if line.startswith(f"accelscope {word} ")]
    assert len(found) == 1, found
    return found[0]


def _bash(line: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)


def test_every_line_of_the_cli_snippet_is_one_of_these_tests():
    assert [line.split()[1] for line in shell_lines(RUN[2])] == ["analyze", "analyze", "dashboard", "export"]


def test_the_cli_snippet_analyzes_the_run(cli_dir):
    proc = _bash(_line("analyze runs/exp1"), cli_dir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("exp1: 16 steps") and "input wait:" in proc.stdout


def test_the_cli_snippet_gates_a_trace_in_ci(cli_dir):
    import json

    line = next(x for x in shell_lines(RUN[2]) if "--fail-if" in x)
    proc = _bash(line, cli_dir)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["run"] == "trace" and doc["input_wait_share"] < 0.10


def test_the_cli_snippet_exports_for_perfetto(cli_dir):
    import gzip
    import json

    proc = _bash(_line("export"), cli_dir)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(gzip.decompress((cli_dir / "exp1.json.gz").read_bytes()))
    assert any(e["ph"] == "X" for e in doc["traceEvents"])


def test_the_cli_snippet_serves_the_dashboard_where_it_says(cli_dir):
    pytest.importorskip("dash", reason="the dashboard extra serves the dashboard")
    line = _line("dashboard")
    url = re.search(r"# (http://\S+)", line).group(1)
    proc = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=cli_dir, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        if not first and "cannot serve" in proc.stderr.read():
            pytest.skip(f"{url} is taken on this machine: the snippet's default port cannot be served here")
        assert first.split()[:2] == ["dashboard:", url.rstrip("/") + "/"], first
        with urllib.request.urlopen(url, timeout=60) as page:
            assert page.status == 200 and b"accelscope" in page.read()
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


def test_the_cluster_snippet_imports_on_a_local_cluster(tmp_path, shared_dir):
    """The cluster snippet's lines, with a LocalCluster started here for the scheduler, the real
    8-rank DLRM job for the traces (the URL line: its file:// URL) and tmp_path for /shared/jobs."""
    pytest.importorskip("distributed", reason="the cluster extra runs the cluster snippet")
    from distributed import LocalCluster

    job = shared_dir / "traces/more/param-dlrm-8rank"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        for line in shell_lines(RUN[3]):
            line = (line.replace("tcp://scheduler:8786", cluster.scheduler_address).replace("/shared/jobs/run42/traces", str(job))
                    .replace("s3://bucket/run43/", job.as_uri()).replace("/shared/jobs/", f"{tmp_path}/"))
            proc = _bash(line, tmp_path)
            assert proc.returncode == 0, (line, proc.stderr)
            if line.startswith("accelscope analyze"):
                assert "8 ranks" in proc.stdout or "rank 7" in proc.stdout, proc.stdout[:500]
    assert (tmp_path / "run42/accelscope/rank-7").is_dir() and (tmp_path / "run43/accelscope/rank-7").is_dir()
