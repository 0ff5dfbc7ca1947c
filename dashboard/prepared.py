"""What the dashboard prepares for a run's first view, kept inside the run for the next time.

The lane layout, the launch index and the whole-run timeline
of a big run take seconds to build (about 0.5 s at 1M events, 5 s at 10M) and are the same
every time the run is opened. ``RunView.cached`` serves the keys named in ``PERSISTED``
from ``RUN/.accelscope-cache/`` (``analysis/cache.py``: written atomically, signed with this
user's key, never unpickled otherwise), keyed by the run's content and by the code that
builds them (the analysis, the trace model and the dashboard's timeline), so a changed run
or an upgrade rebuilds them. A live run is never served from it, nor cached.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from accelscope.analysis.cache import code_digest, content_key, load_cached, store_cached
from accelscope.traces.importer import source_digest
from accelscope.traces.run import Run

T = TypeVar("T")
PERSISTED = ("lanes", "scheduling", "timeline")  # RunView cache keys, before any "@"
DASHBOARD = Path(__file__).resolve().parent
_SAFE = re.compile(r"[^A-Za-z0-9_.]")


def persisted(key: str) -> bool:
    return key.split("@")[0] in PERSISTED


def run_key(run: Run) -> str | None:
    """The key of what is kept for ``run`` now (None for a live run: nothing is kept)."""
    if run.live:
        return None
    digest = hashlib.sha256((content_key(run.path) + code_digest() + source_digest(DASHBOARD, DASHBOARD / "timeline")).encode())
    return digest.hexdigest()[:32]


def _file_name(name: str) -> str:
    return "dash." + _SAFE.sub("_", name)


def load(run_path: Path, key: str | None, name: str) -> tuple | None:
    """``(value,)`` as an earlier build stored it for ``name`` under ``key`` (a built None is
    kept too); None when nothing is kept."""
    if key is None:
        return None
    got = load_cached(run_path, _file_name(name), key, tuple)
    return got if isinstance(got, tuple) and len(got) == 1 else None


def load_or_build(run_path: Path, key: str | None, name: str, build: Callable[[], T]) -> T:
    """``build()``, or what an earlier build stored for ``name`` under ``key``."""
    got = load(run_path, key, name)
    if got is not None:
        return got[0]
    obj = build()
    if key is not None:
        store_cached(run_path, _file_name(name), key, (obj,))
    return obj
