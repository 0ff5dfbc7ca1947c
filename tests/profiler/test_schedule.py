import pytest

from accelscope.schedule import TRANSITIONS, Action, Schedule


def test_actions_follow_skip_wait_warmup_active():
    s = Schedule(skip_first=1, wait=2, warmup=1, active=2, repeat=1)
    assert [s(i) for i in range(8)] == [
        Action.NONE,
        Action.NONE, Action.NONE, Action.WARMUP, Action.RECORD, Action.RECORD_AND_SAVE,
        Action.NONE, Action.NONE,
    ]


def test_repeat_zero_records_forever():
    s = Schedule(skip_first=0, wait=1, warmup=0, active=1, repeat=0)
    assert all(s(i) is (Action.NONE if i % 2 == 0 else Action.RECORD_AND_SAVE) for i in range(1000))


def test_every_transition_is_in_the_table():
    for s in (Schedule(), Schedule(0, 0, 0, 1, 0), Schedule(3, 0, 2, 3, 2), Schedule(0, 1, 0, 4, 3)):
        seq = [s(i) for i in range(200)]
        for prev, cur in zip(seq, seq[1:]):
            assert (prev, cur) in TRANSITIONS, (s, prev, cur)


def test_windows_lists_recorded_steps():
    s = Schedule(skip_first=2, wait=1, warmup=1, active=3, repeat=2)
    assert s.windows(30) == [(4, 6), (9, 11)]
    assert s.windows(5) == [(4, 4)], "a window cut short by the end of training is still a window"


@pytest.mark.parametrize("kwargs", [dict(active=0), dict(wait=-1), dict(skip_first=-2), dict(repeat=-1)])
def test_invalid_schedules_are_value_errors(kwargs):
    with pytest.raises(ValueError):
        Schedule(**kwargs)
