"""``accelscope run [--] script.py args...``: profile an unmodified PyTorch script.

Steps are detected with torch's global optimizer hooks (one step per ``optimizer.step()``
of the first optimizer seen, so GANs with two optimizers count one step per iteration),
and every ``next()`` on a DataLoader iterator is timed as an input wait. The script runs
as ``__main__`` with its own ``sys.argv``; its exit code is kept.
"""

from __future__ import annotations

import runpy
import sys
import traceback
from pathlib import Path
from typing import Any

from accelscope.errors import AccelscopeError


def run_script(script: str, args: list[str], out_dir: str | Path, *, mode: str = "light", name: str | None = None) -> tuple[int, Path | None]:
    """Run ``script`` under accelscope; return (its exit code, the run directory)."""
    path = Path(script)
    if not path.is_file():
        raise AccelscopeError(f"{path}: no such script")
    import accelscope

    try:
        import torch
        from torch.optim.optimizer import register_optimizer_step_post_hook
        from torch.utils.data import dataloader
    except ImportError as exc:
        raise AccelscopeError(f"accelscope run profiles PyTorch scripts and needs torch ({exc}): pip install 'accelscope[torch]'") from None

    run_name = name or path.stem
    prof = accelscope.profile(Path(out_dir) / run_name, mode=mode, framework="torch")
    counted: list[Any] = []

    def on_optimizer_step(optimizer: Any, *_: Any) -> None:
        if not counted:
            counted.append(optimizer)
        if optimizer is counted[0]:
            prof.step()

    original_next = dataloader._BaseDataLoaderIter.__next__

    def timed_next(self: Any) -> Any:
        t0 = prof.input_wait_started()
        try:
            return original_next(self)
        finally:
            prof.input_wait_ended(f"next({type(self).__name__})", t0)

    hook = register_optimizer_step_post_hook(on_optimizer_step)
    dataloader._BaseDataLoaderIter.__next__ = timed_next
    old_argv = sys.argv
    sys.argv = [str(path), *args]
    sys.path.insert(0, str(path.resolve().parent))
    code = 0
    try:
        with prof:
            try:
                runpy.run_path(str(path), run_name="__main__")
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if exc.code is not None and not isinstance(exc.code, int):
                    print(exc.code, file=sys.stderr)
            except BaseException as exc:  # the script's own failure: show it as Python would
                prof.failed(exc)  # its training_error, and an out-of-memory error's forensics
                traceback.print_exc()
                code = 1
    finally:
        hook.remove()
        dataloader._BaseDataLoaderIter.__next__ = original_next
        sys.argv = old_argv
        sys.path.remove(str(path.resolve().parent))
    del torch
    return code, prof.run_dir
