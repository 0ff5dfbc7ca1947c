"""Which steps get a full framework trace: a pure ``step -> Action`` function.

Step and input-wait timing cover every step; the expensive framework trace
(torch.profiler/Kineto) records only bounded windows, as torch.profiler's ``schedule``
does: skip ``skip_first`` steps, then repeat ``wait`` idle steps, ``warmup`` steps
(tracing on, results discarded) and ``active`` recorded steps, ``repeat`` times
(0 = forever).
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass


class Action(enum.Enum):
    NONE = "none"
    WARMUP = "warmup"
    RECORD = "record"
    RECORD_AND_SAVE = "record_and_save"  # last recorded step of a window: flush it


# What the framework tracer does when the action changes from one step to the next.
# Only these transitions can occur in a schedule; tests enumerate them.
TRANSITIONS: dict[tuple[Action, Action], tuple[str, ...]] = {
    (Action.NONE, Action.NONE): (),
    (Action.NONE, Action.WARMUP): ("prepare",),
    (Action.NONE, Action.RECORD): ("prepare", "start"),
    (Action.NONE, Action.RECORD_AND_SAVE): ("prepare", "start"),
    (Action.WARMUP, Action.WARMUP): (),
    (Action.WARMUP, Action.RECORD): ("start",),
    (Action.WARMUP, Action.RECORD_AND_SAVE): ("start",),
    (Action.RECORD, Action.RECORD): (),
    (Action.RECORD, Action.RECORD_AND_SAVE): (),
    (Action.RECORD_AND_SAVE, Action.NONE): ("stop", "save"),
    (Action.RECORD_AND_SAVE, Action.WARMUP): ("stop", "save", "prepare"),
    (Action.RECORD_AND_SAVE, Action.RECORD): ("stop", "save", "prepare", "start"),
    (Action.RECORD_AND_SAVE, Action.RECORD_AND_SAVE): ("stop", "save", "prepare", "start"),
}


@dataclass(frozen=True)
class Schedule:
    skip_first: int = 2
    wait: int = 8
    warmup: int = 1
    active: int = 3
    repeat: int = 4

    def __post_init__(self) -> None:
        for field in ("skip_first", "wait", "warmup", "repeat"):
            if getattr(self, field) < 0:
                raise ValueError(f"Schedule.{field} must be >= 0, got {getattr(self, field)}")
        if self.active < 1:
            raise ValueError(f"Schedule.active must be >= 1, got {self.active}")

    @property
    def cycle(self) -> int:
        return self.wait + self.warmup + self.active

    def __call__(self, step: int) -> Action:
        if step < self.skip_first:
            return Action.NONE
        step -= self.skip_first
        if self.repeat and step >= self.cycle * self.repeat:
            return Action.NONE
        pos = step % self.cycle
        if pos < self.wait:
            return Action.NONE
        if pos < self.wait + self.warmup:
            return Action.WARMUP
        return Action.RECORD_AND_SAVE if pos == self.cycle - 1 else Action.RECORD

    def windows(self, n_steps: int) -> list[tuple[int, int]]:
        """Recorded windows among the first ``n_steps`` steps, as (first, last) step indices."""
        out: list[tuple[int, int]] = []
        start = None
        for step in range(n_steps):
            action = self(step)
            if action in (Action.RECORD, Action.RECORD_AND_SAVE) and start is None:
                start = step
            if action is Action.RECORD_AND_SAVE and start is not None:
                out.append((start, step))
                start = None
        if start is not None:
            out.append((start, n_steps - 1))
        return out

    def to_dict(self) -> dict[str, int]:
        return asdict(self)
