"""Traces named by URL (``s3://bucket/job/``, ``gs://...``, ``file:///...``, ``memory://...``):
listed and fetched through fsspec, so a cluster's nodes read traces where they live.

Only this module imports fsspec. A URL source is copied to a local temporary file by the
task that reads it (on a cluster, on that node), read like any file, and the copy removed;
messages name the URL, never the copy.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from accelscope.errors import AccelscopeError
from accelscope.traces import formats
from accelscope.traces.formats import Source

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class RemoteTraceError(AccelscopeError):
    """A URL cannot be listed or read; the message names it."""


def is_url(name: object) -> bool:
    """``name`` is a URL with a scheme (``s3://``, ``file://``), not a local path."""
    return isinstance(name, str) and bool(_URL.match(name))


def _fs(url: str):
    try:
        import fsspec
    except ImportError:
        raise RemoteTraceError(f"{url}: reading traces by URL needs fsspec: pip install 'accelscope[cluster]'") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:  # an unknown scheme, or its package (s3fs, gcsfs) missing
        raise RemoteTraceError(f"{url}: {exc}") from None


def discover_url(url: str) -> list[Source]:
    """The trace files at ``url``: the file itself, or every trace file below a directory."""
    fs, path = _fs(url)
    try:
        if fs.isfile(path):
            found = {path: fs.info(path)}
            from_directory = False
        elif fs.isdir(path):
            found = fs.find(path, detail=True)
            from_directory = True
        else:
            raise RemoteTraceError(f"{url}: no such file or directory")
    except OSError as exc:
        raise RemoteTraceError(f"{url}: cannot list it ({exc})") from None
    sources = []
    for name, info in sorted(found.items()):
        rel = PurePosixPath(name)
        if any(part.startswith(".") for part in rel.relative_to(path).parts) if from_directory else False:
            continue
        fmt = formats.format_of(Path(rel.name))
        if fmt is None:
            if not from_directory:
                raise RemoteTraceError(f"{url}: not a trace file (expected {formats.suffixes_text()})")
            continue
        sources.append(Source(Path(rel.name), fmt, from_directory, url=fs.unstrip_protocol(name), size=int(info.get("size") or 0)))
    if not sources:
        raise RemoteTraceError(f"{url}: no trace files ({formats.suffixes_text(', ')}) in it")
    return sources


def fingerprint(source: Source) -> dict:
    """What identifies a URL source's content for the import cache: its size and, where the
    file system gives one, its modification time or checksum."""
    fs, path = _fs(source.url)
    try:
        info = fs.info(path)
    except OSError as exc:
        raise RemoteTraceError(f"{source.url}: {exc}") from None
    stamp = next((str(info[k]) for k in ("mtime", "LastModified", "updated", "created", "ETag", "md5Hash") if info.get(k) is not None), None)
    return {"path": source.url, "format": source.format, "size_bytes": int(info.get("size") or 0), "mtime_ns": stamp}


@contextlib.contextmanager
def local_file(source: Source) -> Iterator[Source]:
    """``source`` as a local file: itself, or a temporary copy of its URL removed afterwards.
    Errors raised while it is in use name the URL instead of the copy."""
    if not source.url:
        yield source
        return
    fs, path = _fs(source.url)
    tmp = Path(tempfile.mkdtemp(prefix="accelscope-fetch-"))
    local = tmp / source.path.name
    try:
        try:
            with fs.open(path, "rb") as src, open(local, "wb") as dst:
                shutil.copyfileobj(src, dst, 4 << 20)
        except OSError as exc:
            raise RemoteTraceError(f"{source.url}: cannot read it ({exc})") from None
        try:
            yield Source(local, source.format, source.from_directory)
        except AccelscopeError as exc:
            text = str(exc).replace(str(local), source.url)
            if text == str(exc):
                raise
            try:
                renamed = type(exc)(text)
            except TypeError:
                renamed = RemoteTraceError(text)
            raise renamed from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
