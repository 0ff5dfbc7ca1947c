"""The vectorised exact timestamp parser gives what the scalar one gives, token by token."""

import random

import numpy as np
import pytest

from accelscope.traces.exact_time import exact_us_to_ns, exact_us_to_ns_many


def _tokens(seed: int, n: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        whole = str(rng.randrange(0, 5 * 10 ** rng.randint(0, 15)))
        frac = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 3)))
        sign = "-" if rng.random() < 0.1 else ""
        out.append(f"{sign}{whole}{'.' if frac or rng.random() < 0.05 else ''}{frac}".encode())
    return out


def test_random_timestamps_match_the_scalar_parser():
    tokens = _tokens(0, 50_000)
    got = exact_us_to_ns_many(tokens)
    assert got.dtype == np.int64
    assert got.tolist() == [exact_us_to_ns(t) for t in tokens]


def test_real_kineto_forms_are_exact():
    # An absolute µs timestamp with ns digits (beyond a float64's 15.9 digits), an int, a bare int with a point.
    assert exact_us_to_ns_many([b"1690000000123456.789", b"42", b"7.", b"-3.5"]).tolist() == [1690000000123456789, 42000, 7000, -3500]


def test_other_number_forms_go_through_the_scalar_parser():
    tokens = [b"1e3", b".5", b"1.23456", b"+5", b"1.2e-3"]
    assert exact_us_to_ns_many(tokens).tolist() == [exact_us_to_ns(t) for t in tokens]


def test_values_beyond_int64_ns_are_clamped_for_the_range_check():
    assert exact_us_to_ns_many([b"12345678901234567", b"-9650355448321643.5"]).tolist() == [2**63 - 1, -(2**63) + 1]


def test_a_token_that_is_not_a_number_is_a_value_error():
    with pytest.raises(ValueError, match="not a number"):
        exact_us_to_ns_many([b"12.5", b"abc"])


def test_more_tokens_than_one_chunk_keep_their_order():
    tokens = [str(i).encode() + b".001" for i in range(450_001)]
    got = exact_us_to_ns_many(tokens)
    assert got[0] == 1 and got[-1] == 450_000 * 1000 + 1 and got.size == len(tokens)
