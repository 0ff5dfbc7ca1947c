"""Streaming scanner for Chrome trace JSON, in both forms the Chrome trace format defines.

The "JSON Object Format" (``{"traceEvents": [...], ...}``, what torch.profiler writes today)
and the "JSON Array Format" (a bare ``[{...}, {...}]``, what Kineto wrote in late 2020 and
what the legacy autograd profiler's ``export_chrome_trace()`` still writes). Per the spec
the array's closing ``]`` may be missing (a writer killed mid-run): a document that ends
after a complete element (and maybe a comma) is read; one that ends inside an element is
an error. The scanner finds complete elements of the event array with a vectorised bracket
scan (numpy) over chunks, so neither form is ever decoded as one Python object.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from accelscope.errors import AccelscopeError

_TRACE_EVENTS_KEY = re.compile(rb'"traceEvents"\s*:\s*$')
_ARRAY_START = re.compile(rb"\s*\[")
_ELEMENT_GAP = b" \t\r\n,"
_JSON_KIND = {"int": "a number", "float": "a number", "str": "a string", "bool": "a boolean", "NoneType": "null", "null": "null"}
# The legacy autograd profiler names its "processes" instead of numbering them.
LEGACY_HOST_PID = "CPU functions"
LEGACY_DEVICE_PID = "CUDA functions"


class TraceFormatError(AccelscopeError, ValueError):
    """A file is not a readable Kineto trace; the message names the file and the problem."""


class NotATraceError(TraceFormatError):
    """Valid JSON, but not a Kineto trace (no ``traceEvents``): skipped in directories."""


class BatchDecodeError(TraceFormatError):
    """A batch of elements did not decode; raised before anything of it was kept, so that a
    batch cut at a guessed boundary can be scanned again (``Scanner.rescan``)."""


# Where one element of the event array ends and the next begins ("}, {" with any blanks):
# a guess, as the same bytes may sit inside a string or between nested objects. A cut there
# that is wrong leaves a batch that is not a JSON array of objects, which the decoder refuses
# (the batch ends inside a string or with unbalanced brackets), so a guess is never trusted
# until its batch decoded. FAST_WINDOW is how far back from a chunk's end to look.
_BOUNDARY = re.compile(rb"\}[ \t\r\n]*,[ \t\r\n]*\{")
FAST_WINDOW = 1 << 16
_GAP_RUN = re.compile(rb"[ \t\r\n,]*")


def neither_form(path: Path, kind: str) -> NotATraceError:
    """The error for valid JSON whose top level is a scalar (``kind``: its Python or msgspec type name)."""
    what = _JSON_KIND.get(kind, kind)
    return NotATraceError(f"{path}: not a Kineto trace: the top level is {what}, neither an object with traceEvents nor an array of events")


def is_array_document(data: bytes) -> bool:
    """Whether a document (or its first bytes) is in the JSON Array Format."""
    return _ARRAY_START.match(data) is not None


def _structure(buf: bytes, depth0: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions, characters and depth-after of the brackets in ``buf`` outside strings.

    ``buf`` must start outside a string at nesting depth ``depth0``.
    """
    arr = np.frombuffer(buf, dtype=np.uint8)
    quotes = np.flatnonzero(arr == 34)
    if quotes.size:
        maybe_escaped = quotes[(quotes > 0)]
        maybe_escaped = maybe_escaped[arr[maybe_escaped - 1] == 92]
        if maybe_escaped.size:  # rare: a quote after backslashes; odd run = escaped
            escaped = []
            for p in maybe_escaped.tolist():
                k = p - 1
                while k >= 0 and buf[k] == 92:
                    k -= 1
                if (p - 1 - k) % 2:
                    escaped.append(p)
            if escaped:
                quotes = np.setdiff1d(quotes, np.asarray(escaped, dtype=quotes.dtype), assume_unique=True)
    folded = arr & 0xDF  # '{' -> '[' and '}' -> ']': one compare pair finds all four
    pos = np.flatnonzero((folded == 0x5B) | (folded == 0x5D))
    if quotes.size and pos.size:
        pos = pos[(np.searchsorted(quotes, pos) & 1) == 0]
    chars = arr[pos]
    delta = np.where((chars == 123) | (chars == 91), 1, -1)
    return pos, chars, depth0 + np.cumsum(delta)


@dataclass
class Scanner:
    """Splits a streamed Chrome trace document into batches of complete event elements.

    In the object form the event array is the value of ``traceEvents`` (nesting depth 2);
    in the array form it is the document itself, scanned as if one level deeper so that the
    same depth rules find its elements.
    """

    path: Path
    state: str = "before"  # before -> in -> after the event array
    array_form: bool = False
    truncated: bool = False  # array form whose closing "]" is missing
    elements: int = 0  # complete object elements found (a batch cut at a guess counts one: only "any?" is asked)
    carry: bytes = b""
    head: bytes = b""
    tail: list[bytes] = field(default_factory=list)
    fast: bool = True  # cut the object form's event array at guessed boundaries (rescan turns it off)
    last_fast: bool = False  # the last batch returned was cut at a guess
    _before_cut: bytes = b""

    def feed(self, data: bytes) -> bytes | None:
        """Add bytes; return a JSON array text of the elements completed so far, if any.

        Inside the object form's event array the batch ends at the last guessed boundary
        ("}, {"), found without scanning the chunk; the caller decodes it and calls
        ``rescan`` if that fails. Elsewhere, and once a guess failed, every bracket is
        scanned. ``flush`` must be called at the end of the document."""
        if self.state == "after":
            self.tail.append(data)
            return None
        text = self.carry + data if self.carry else data
        self.last_fast = False
        if self.state == "in" and self.fast and not self.array_form:
            batch = self._cut_at_guess(text)
            if batch is not None:
                return batch
        if self.state == "before" and not self.array_form:
            if not text.strip():
                self.carry = text
                return None
            self.array_form = is_array_document(text)
        depth0 = 2 if self.state == "in" else (1 if self.array_form else 0)
        pos, chars, depth = _structure(text, depth0)
        body_start = 0
        if self.state == "before":
            if self.array_form:
                found = int(pos[0])  # the document's own "["
            else:
                opens = pos[(chars == 91) & (depth == 2)]
                found = None
                for p in opens.tolist():
                    if _TRACE_EVENTS_KEY.search(text[max(0, p - 64) : p]):
                        found = p
                        break
                if found is None:
                    if len(text) > 256 << 20:
                        raise NotATraceError(f"{self.path}: no traceEvents array in the first 256 MB: not a Kineto trace")
                    self.carry = text
                    return None
            self.head = text[: found + 1]
            self.state = "in"
            body_start = found + 1
            inside = pos > found
            pos, chars, depth = pos[inside], chars[inside], depth[inside]
        closes = pos[(chars == 93) & (depth == 1)]
        if (depth < 2).any() and not closes.size:
            raise TraceFormatError(f"{self.path}: malformed JSON inside traceEvents")
        limit = int(closes[0]) if closes.size else len(text)
        ends = pos[(chars == 125) & (depth == 2) & (pos < limit)]
        batch = None
        rest_from = None
        if ends.size:
            opens = pos[(chars == 123) & (depth == 3)]
            first, last = int(opens[0]) if opens.size else len(text), int(ends[-1])
            if first > last:  # a "}" closing a "[": mismatched brackets
                raise TraceFormatError(f"{self.path}: malformed JSON inside traceEvents")
            self._check_gap(text[body_start:first])
            batch = bytearray(last - first + 3)
            batch[0] = 0x5B
            batch[1:-1] = memoryview(text)[first : last + 1]
            batch[-1] = 0x5D
            rest_from = last + 1
            self.elements += int(ends.size)
        if closes.size:
            if self.elements:  # an array of scalars only is no trace at all (header())
                self._check_gap(text[rest_from if rest_from is not None else body_start : limit])
            self.state = "after"
            self.tail.append(text[limit:])
            self.carry = b""
        else:
            self.carry = text[rest_from if rest_from is not None else body_start :]
        return batch

    def _cut_at_guess(self, text: bytes) -> bytearray | None:
        """The elements of ``text`` up to the last guessed boundary, or None (no guess found)."""
        window = max(len(text) - FAST_WINDOW, 0)
        cut = None
        for m in _BOUNDARY.finditer(text, window):
            cut = m.start()
        if cut is None:
            return None
        first = _GAP_RUN.match(text).end()
        if first > cut or text[first] != 0x7B:  # not an element next: let the scan say what is wrong
            return None
        batch = bytearray(cut - first + 3)
        batch[0] = 0x5B
        batch[1:-1] = memoryview(text)[first : cut + 1]
        batch[-1] = 0x5D
        self._before_cut = text
        self.carry = text[cut + 1 :]
        self.elements += 1  # at least one; only whether there were any is used
        self.last_fast = True
        return batch

    def rescan(self) -> bytes | None:
        """The last batch was cut at a wrong guess (it did not decode): scan its bytes and
        what followed them properly instead, and stop guessing in this document."""
        if not self.last_fast:
            raise RuntimeError("rescan() after a batch that was not cut at a guess")
        self.fast, self.last_fast = False, False
        self.carry, self._before_cut = self._before_cut, b""
        return self.feed(b"")

    def flush(self) -> bytes | None:
        """At the end of the document: scan what is left of the event array (its last
        elements, the closing bracket and what follows it)."""
        if self.state != "in" or not self.carry:
            return None
        self.fast = False
        return self.feed(b"")

    def _check_gap(self, gap: bytes) -> None:
        """Between elements (outside the batches msgspec validates) only commas and blanks:
        a number, string or array there is an invalid event, as in a whole-document decode."""
        extra = gap.strip(_ELEMENT_GAP)
        if extra:
            raise TraceFormatError(f"{self.path}: invalid trace event (an element of the event array is not an object: {extra[:30].decode('utf-8', 'replace')!r})")

    def header(self) -> dict[str, Any]:
        """The document without its events, once everything was fed ({} for the array form)."""
        if self.state == "before":
            try:
                doc = json.loads(self.carry)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise TraceFormatError(f"{self.path}: not JSON ({getattr(exc, 'msg', exc)})") from None
            if isinstance(doc, dict):
                raise NotATraceError(f"{self.path}: no traceEvents array: not a Kineto trace")
            raise neither_form(self.path, type(doc).__name__)
        if self.array_form:
            return self._array_header()
        if self.state == "in":
            raise TraceFormatError(f"{self.path}: truncated JSON (the traceEvents array never closes)")
        try:
            doc = json.loads(self.head + b"".join(self.tail))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TraceFormatError(f"{self.path}: truncated or invalid JSON after traceEvents ({exc.msg if hasattr(exc, 'msg') else exc})") from None
        if not isinstance(doc, dict):
            raise TraceFormatError(f"{self.path}: not a Kineto trace (top level is not an object)")
        doc.pop("traceEvents", None)
        return doc

    def _array_header(self) -> dict[str, Any]:
        if self.state == "in":
            rest = self.carry.strip(_ELEMENT_GAP)
            if rest[:1] == b"{" or (rest and self.elements):
                raise TraceFormatError(f"{self.path}: truncated JSON inside an event (the array ends in the middle of an element)")
            self.truncated = True  # valid: the spec lets the closing "]" be missing
        elif b"".join(self.tail)[1:].strip():
            raise TraceFormatError(f"{self.path}: invalid JSON after the event array")
        if not self.elements:
            raise NotATraceError(f"{self.path}: a JSON array without trace event objects: not a Chrome trace")
        return {}


def gzip_size(path: Path) -> int | None:
    """A gzip file's uncompressed size modulo 2**32 (its ISIZE trailer), read without
    decompressing; None for a file that is not gzip. Raises OSError as ``open`` does."""
    with open(path, "rb") as fh:
        if fh.read(2) != b"\x1f\x8b":
            return None
        fh.seek(-4, 2)
        return int.from_bytes(fh.read(4), "little")


def read_chunks(path: Path, chunk_bytes: int, on_bytes: Callable[[int], None] | None) -> Iterator[bytes]:
    """The file's bytes (gunzipped when gzip, detected by content) in chunks."""
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw) if gz else raw
            while True:
                data = stream.read(chunk_bytes)
                if not data:
                    return
                if on_bytes is not None:
                    on_bytes(raw.tell())
                yield data
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise TraceFormatError(f"{path}: truncated or corrupt gzip ({exc})") from None
    except OSError as exc:
        raise TraceFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None


def adopt_legacy(events: list[Any], as_int: Callable[[Any], int | None]) -> int:
    """Give the legacy autograd profiler's slices the categories Kineto would: returns how many.

    Its ``export_chrome_trace()`` writes no ``cat`` and string pids: ``"CPU functions"`` for
    host ops (they become ``cpu_op`` with pid 0), and in torch <= 1.7 ``"CUDA functions"``
    for kernels whose tid is the device index (they become ``kernel`` on that device,
    stream 0: the export records no stream). Flow events (``s``/``f``) are left alone.
    """
    n = 0
    for e in events:
        if e.cat is None and type(e.pid) is str and e.ph == "X":
            if e.pid == LEGACY_HOST_PID:
                e.cat, e.pid = "cpu_op", 0
                n += 1
            elif e.pid == LEGACY_DEVICE_PID:
                e.cat, e.pid, e.tid = "kernel", as_int(e.tid) or 0, 0
                n += 1
    return n
