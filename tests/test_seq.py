"""media.seq: 16/32-bit serial arithmetic at the wrap, and the unwrappers across several wraps with reordering."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.seq import (
    SequenceUnwrapper,
    TimestampUnwrapper,
    uint16_add,
    uint16_diff,
    uint16_gt,
    uint16_gte,
    uint32_add,
    uint32_diff,
    uint32_gt,
    uint32_gte,
)

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


def test_uint16_add_wraps() -> None:
    assert uint16_add(65535, 1) == 0
    assert uint16_add(65535, 2) == 1
    assert uint16_add(0, -1) == 65535
    assert uint16_add(100, 200) == 300


def test_uint16_gt_across_wrap() -> None:
    assert uint16_gt(0, 65535)
    assert not uint16_gt(65535, 0)
    assert uint16_gt(10, 65530)
    assert uint16_gt(2, 1)
    assert not uint16_gt(1, 2)
    assert not uint16_gt(5, 5)
    # exactly half the space apart: undefined in RFC 1982, false both ways here
    assert not uint16_gt(0x8000, 0)
    assert not uint16_gt(0, 0x8000)
    assert uint16_gt(0x7FFF, 0)


def test_uint16_gte() -> None:
    assert uint16_gte(5, 5)
    assert uint16_gte(0, 65535)
    assert not uint16_gte(65535, 0)


def test_uint16_diff_range_and_wrap() -> None:
    assert uint16_diff(0, 65535) == 1
    assert uint16_diff(65535, 0) == -1
    assert uint16_diff(5, 5) == 0
    assert uint16_diff(3, 65533) == 6
    assert uint16_diff(0x7FFF, 0) == 32767
    assert uint16_diff(0x8000, 0) == -32768
    assert uint16_diff(0, 0x8000) == -32768


def test_uint32_at_wrap() -> None:
    top = 0xFFFFFFFF
    assert uint32_add(top, 1) == 0
    assert uint32_add(0, -1) == top
    assert uint32_gt(0, top)
    assert not uint32_gt(top, 0)
    assert uint32_gte(7, 7)
    assert not uint32_gt(0x80000000, 0)
    assert uint32_diff(0, top) == 1
    assert uint32_diff(top, 0) == -1
    assert uint32_diff(1000, top - 999) == 2000
    assert uint32_diff(0x80000000, 0) == -(2**31)


@given(u16, u16)
def test_uint16_properties(a: int, b: int) -> None:
    d = uint16_diff(a, b)
    assert -32768 <= d <= 32767
    assert uint16_add(b, d) == a
    assert uint16_gt(a, b) == (d > 0)
    assert uint16_gte(a, b) == (d >= 0)


@given(u32, u32)
def test_uint32_properties(a: int, b: int) -> None:
    d = uint32_diff(a, b)
    assert -(2**31) <= d < 2**31
    assert uint32_add(b, d) == a
    assert uint32_gt(a, b) == (d > 0)


def test_sequence_unwrapper_multiple_wraps() -> None:
    u = SequenceUnwrapper()
    start = 65000
    values = [u.unwrap((start + i) & 0xFFFF) for i in range(4 * 65536)]
    first = values[0]
    assert values == list(range(first, first + 4 * 65536))
    assert u.highest == values[-1]


def test_sequence_unwrapper_reordering_across_wrap() -> None:
    u = SequenceUnwrapper()
    seqs = [65533, 65535, 65534, 1, 0, 2, 65532, 3]
    ext = [u.unwrap(s) for s in seqs]
    base = ext[0] - 65533
    assert [e - base for e in ext] == [65533, 65535, 65534, 65537, 65536, 65538, 65532, 65539]
    assert u.highest == base + 65539


def test_sequence_unwrapper_first_value_stays_non_negative_when_late_ones_follow() -> None:
    u = SequenceUnwrapper()
    assert u.unwrap(2) == 65538
    assert u.unwrap(65535) == 65535  # a late packet from before the first: still >= 0
    assert u.unwrap(3) == 65539
    u.reset()
    assert u.highest is None
    assert u.unwrap(7) == 65543


def test_sequence_unwrapper_random_shuffle_within_window() -> None:
    rng = random.Random(1982)
    truth = list(range(60000, 60000 + 300000))
    # shuffle within windows of 50 packets: moderate reordering, many wraps
    arrival = []
    for i in range(0, len(truth), 50):
        window = truth[i : i + 50]
        rng.shuffle(window)
        arrival += window
    u = SequenceUnwrapper()
    ext = [u.unwrap(s & 0xFFFF) for s in arrival]
    offset = ext[0] - arrival[0]
    assert all(e - offset == s for e, s in zip(ext, arrival, strict=True))


def test_timestamp_unwrapper_multiple_wraps() -> None:
    u = TimestampUnwrapper()
    step = 3600 * 25 * 60 * 10  # ten minutes of 90 kHz per step: ~ 80 steps per wrap
    start = 0xFFFFFFFF - 5
    values = [u.unwrap((start + i * step) & 0xFFFFFFFF) for i in range(400)]
    assert values == [values[0] + i * step for i in range(400)]
    assert values[-1] - values[0] > 3 * 2**32


def test_timestamp_unwrapper_reordered_frames() -> None:
    u = TimestampUnwrapper()
    top = 0xFFFFFFFF
    a = u.unwrap(top - 3599)
    b = u.unwrap(0)  # wrapped
    c = u.unwrap(top - 7199)  # an older frame arriving late
    d = u.unwrap(3600)
    assert (b - a, c - a, d - a) == (3600, -3600, 7200)


@pytest.mark.parametrize("cls", [SequenceUnwrapper, TimestampUnwrapper])
def test_unwrapper_masks_input(cls: type[SequenceUnwrapper] | type[TimestampUnwrapper]) -> None:
    u = cls()
    first = u.unwrap(5)
    assert first >= 0
    assert u.unwrap(6) == first + 1
