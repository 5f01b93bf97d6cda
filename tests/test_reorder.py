"""media.reorder: in-order fast path, reordering, loss given up by time and by count, duplicates, late packets,
sequence wrap, restarts (RFC 3550 §A.1 probation), and RFC 3550 §6.4.1 jitter against hand-computed values.

Time is virtual: every call gets an explicit ``now``.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.reorder import JitterEstimator, ReorderBuffer


def push_all(buf: ReorderBuffer[int], seqs: list[int], now: float = 0.0) -> list[list[int]]:
    return [buf.push(s, s, now) for s in seqs]


def counters(buf: ReorderBuffer[int]) -> dict[str, int]:
    names = ("received", "lost", "duplicate", "late", "reordered", "resets", "stray")
    return {n: getattr(buf, n) for n in names}


def test_in_order_fast_path() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer()
    assert push_all(buf, list(range(1000, 1100))) == [[s] for s in range(1000, 1100)]
    assert buf.buffered == 0
    assert buf.next_deadline() is None
    assert buf.pop_ready(100.0) == []
    assert counters(buf) == dict(received=100, lost=0, duplicate=0, late=0, reordered=0, resets=0, stray=0)


def test_first_packet_released_at_once_whatever_its_number() -> None:
    for first in (0, 1, 32768, 65535):
        buf: ReorderBuffer[int] = ReorderBuffer()
        assert buf.push(first, first, 0.0) == [first]
        nxt = (first + 1) & 0xFFFF
        assert buf.push(nxt, nxt, 0.0) == [nxt]


def test_packets_from_before_the_first_are_late() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer()
    assert push_all(buf, [5, 4, 6, 3, 4]) == [[5], [], [6], [], []]
    assert (buf.late, buf.duplicate, buf.lost) == (2, 1, 0)


def test_swap() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer()
    assert push_all(buf, [1, 3, 2, 4]) == [[1], [], [2, 3], [4]]
    assert buf.reordered == 1
    assert buf.lost == 0
    assert buf.next_deadline() is None


def test_reordered_counts_every_packet_overtaken() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer()
    assert push_all(buf, [0, 4, 2, 3, 1]) == [[0], [], [], [], [1, 2, 3, 4]]
    assert buf.reordered == 3  # 2, 3 and 1 each arrived after 4
    assert buf.lost == 0


def test_loss_given_up_by_time_via_timer() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(max_delay=0.05)
    assert buf.push(1, 1, 10.0) == [1]
    assert buf.push(3, 3, 10.01) == []
    assert buf.push(4, 4, 10.02) == []
    assert buf.next_deadline() == pytest.approx(10.06)
    assert buf.pop_ready(10.059) == []
    assert buf.pop_ready(10.06) == [3, 4]
    assert buf.lost == 1
    assert buf.next_deadline() is None
    assert buf.push(5, 5, 10.07) == [5]


def test_loss_given_up_by_time_on_push() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(max_delay=0.05)
    assert push_all(buf, [1, 3], now=0.0) == [[1], []]
    assert buf.push(5, 5, 0.06) == [3]  # 2 given up; 4 still has time (5 parked at 0.06)
    assert buf.lost == 1
    assert buf.next_deadline() == pytest.approx(0.11)
    assert buf.push(4, 4, 0.08) == [4, 5]
    assert buf.lost == 1
    assert buf.reordered == 1


def test_deadline_follows_oldest_parked_packet() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(max_delay=0.1)
    buf.push(0, 0, 0.0)
    buf.push(5, 5, 1.0)  # gaps 1..4, oldest parked at 1.0
    buf.push(2, 2, 1.05)
    assert buf.next_deadline() == pytest.approx(1.1)
    assert buf.push(1, 1, 1.06) == [1, 2]
    # 5 still waits for 3 and 4 and has been parked since 1.0
    assert buf.next_deadline() == pytest.approx(1.1)
    assert buf.pop_ready(1.1) == [5]
    assert buf.lost == 2


def test_several_gaps_expire_in_one_timer() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(max_delay=0.05)
    buf.push(0, 0, 0.0)
    assert push_all(buf, [2, 4, 6], now=0.01) == [[], [], []]
    assert buf.pop_ready(1.0) == [2, 4, 6]
    assert buf.lost == 3
    assert buf.next_deadline() is None


def test_later_gap_keeps_its_own_time() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(max_delay=0.05)
    buf.push(0, 0, 0.0)
    buf.push(2, 2, 0.0)
    buf.push(4, 4, 0.04)
    assert buf.pop_ready(0.05) == [2]  # gap 1 given up; 4 was parked at 0.04
    assert buf.next_deadline() == pytest.approx(0.09)
    assert buf.pop_ready(0.09) == [4]
    assert buf.lost == 2


def test_loss_given_up_by_count() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(max_packets=4, max_delay=10.0)
    assert buf.push(0, 0, 0.0) == [0]
    assert push_all(buf, [2, 3, 4, 5]) == [[], [], [], []]
    assert buf.buffered == 4
    assert buf.push(6, 6, 0.0) == [2, 3, 4, 5, 6]
    assert buf.lost == 1
    assert buf.buffered == 0
    assert buf.next_deadline() is None


def test_count_gives_up_only_the_head_gap() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(max_packets=2, max_delay=10.0)
    buf.push(0, 0, 0.0)
    assert push_all(buf, [2, 4]) == [[], []]
    assert buf.push(6, 6, 1.0) == [2]
    assert buf.lost == 1
    assert buf.buffered == 2
    assert buf.next_deadline() == pytest.approx(10.0)  # 4 was parked at 0.0
    assert buf.push(3, 3, 1.0) == [3, 4]
    assert buf.next_deadline() == pytest.approx(11.0)


def test_max_delay_zero_never_waits() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(max_delay=0.0)
    assert push_all(buf, [0, 2, 1, 3]) == [[0], [2], [], [3]]
    assert (buf.lost, buf.late) == (1, 1)


def test_duplicates() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer()
    assert push_all(buf, [1, 1]) == [[1], []]
    assert buf.duplicate == 1
    assert push_all(buf, [3, 3]) == [[], []]  # a duplicate while parked
    assert buf.duplicate == 2
    assert buf.push(2, 2, 0.0) == [2, 3]
    assert push_all(buf, [2, 3, 1]) == [[], [], []]
    assert buf.duplicate == 5
    assert buf.late == 0
    assert buf.received == 8


def test_late_then_duplicate_of_late() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(max_delay=0.05)
    buf.push(10, 10, 0.0)
    buf.push(13, 13, 0.0)
    assert buf.pop_ready(0.1) == [13]
    assert buf.lost == 2
    assert buf.push(12, 12, 0.2) == []
    assert buf.push(11, 11, 0.2) == []
    assert (buf.late, buf.duplicate) == (2, 0)
    assert buf.push(11, 11, 0.3) == []  # once late, a second copy is a duplicate
    assert (buf.late, buf.duplicate) == (2, 1)
    assert buf.lost == 2  # late arrivals do not undo the loss
    assert buf.push(14, 14, 0.3) == [14]


def test_wrap_in_order_and_swapped() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer()
    assert push_all(buf, [65533, 65534, 65535, 0, 1]) == [[65533], [65534], [65535], [0], [1]]
    buf2: ReorderBuffer[int] = ReorderBuffer()
    assert push_all(buf2, [65534, 0, 65535, 1]) == [[65534], [], [65535, 0], [1]]
    assert buf2.reordered == 1


def test_wrap_loss_and_late() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(max_delay=0.05)
    buf.push(65534, 65534, 0.0)
    assert buf.push(1, 1, 0.0) == []
    assert buf.pop_ready(0.05) == [1]
    assert buf.lost == 2  # 65535 and 0
    assert buf.push(0, 0, 0.06) == []
    assert buf.push(65535, 65535, 0.06) == []
    assert buf.late == 2
    assert buf.push(2, 2, 0.07) == [2]


def test_many_wraps_with_reordering_and_loss() -> None:
    rng = random.Random(3550)
    buf: ReorderBuffer[int] = ReorderBuffer(max_packets=64, max_delay=0.05)
    sent = list(range(60000, 60000 + 200000))
    dropped = set(rng.sample(sent, 500))
    arrival = [s for s in sent if s not in dropped]
    for i in range(0, len(arrival) - 1, 7):  # swap neighbours now and then
        if rng.random() < 0.3:
            arrival[i], arrival[i + 1] = arrival[i + 1], arrival[i]
    out: list[int] = []
    now = 0.0
    for s in arrival:
        now += 0.001
        out += buf.push(s & 0xFFFF, s, now)
    out += buf.flush()
    assert out == sorted(out)
    assert len(out) == len(arrival)
    assert buf.lost == len(dropped)
    assert (buf.duplicate, buf.late, buf.resets) == (0, 0, 0)


def test_big_jump_forward_restarts_after_confirmation() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer()
    assert push_all(buf, [100, 101]) == [[100], [101]]
    assert buf.push(40000, 40000, 0.0) == []  # probation (RFC 3550 §A.1)
    assert buf.push(40001, 40001, 0.0) == [40000, 40001]
    assert buf.resets == 1
    assert buf.lost == 0
    assert buf.push(40002, 40002, 0.0) == [40002]
    assert buf.buffered == 0


def test_restart_confirmed_across_the_wrap() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer()
    push_all(buf, [20000, 20001])
    assert push_all(buf, [65535, 0, 1, 2]) == [[], [65535, 0], [1], [2]]
    assert buf.resets == 1
    assert buf.push(65535, 65535, 0.0) == []
    assert buf.duplicate == 1


def test_big_jump_backward_restarts() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer()
    push_all(buf, [50000, 50001])
    assert push_all(buf, [7, 8, 9]) == [[], [7, 8], [9]]
    assert buf.resets == 1


def test_restart_releases_parked_packets_first() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer()
    assert push_all(buf, [100, 102, 104]) == [[100], [], []]
    assert push_all(buf, [9000, 9001]) == [[], [102, 104, 9000, 9001]]
    assert buf.lost == 2  # 101 and 103: never coming now
    assert buf.resets == 1
    assert buf.next_deadline() is None
    assert buf.push(101, 101, 0.0) == []  # the old stream is now a big jump: a probe, not a reset
    assert buf.push(9002, 9002, 0.0) == [9002]
    assert buf.resets == 1


def test_stray_packet_does_not_reset() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer()
    assert push_all(buf, [100, 30000, 101, 102]) == [[100], [], [101], [102]]
    assert push_all(buf, [20000, 103]) == [[], [103]]
    assert buf.stray == 1  # the probe 30000 was replaced by 20000
    assert buf.resets == 0
    assert buf.flush() == []
    assert buf.stray == 2  # flush drops the unconfirmed probe 20000
    assert buf.push(104, 104, 0.0) == [104]


def test_jump_threshold_is_configurable() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(max_jump=100, max_delay=1.0)
    buf.push(0, 0, 0.0)
    assert buf.push(100, 100, 0.0) == []  # within max_jump: parked
    assert buf.buffered == 1
    assert buf.push(300, 300, 0.0) == []
    assert buf.push(301, 301, 0.0) == [100, 300, 301]
    assert buf.resets == 1
    assert buf.lost == 99


def test_flush_releases_in_order_and_counts_gaps() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer()
    push_all(buf, [0, 5, 3, 4, 9])
    assert buf.flush() == [3, 4, 5, 9]
    assert buf.lost == 5  # 1, 2, 6, 7, 8
    assert buf.next_deadline() is None
    assert buf.push(10, 10, 0.0) == [10]
    assert buf.flush() == []


def test_items_are_opaque() -> None:
    buf: ReorderBuffer[tuple[int, bytes]] = ReorderBuffer()
    assert buf.push(7, (7, b"a"), 0.0) == [(7, b"a")]
    assert buf.push(9, (9, b"c"), 0.0) == []
    assert buf.push(8, (8, b"b"), 0.0) == [(8, b"b"), (9, b"c")]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(max_packets=0), "max_packets"),
        (dict(max_delay=-0.1), "max_delay"),
        (dict(max_jump=0), "max_jump"),
        (dict(max_jump=32768), "max_jump"),
    ],
)
def test_bad_configuration(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReorderBuffer(**kwargs)  # type: ignore[arg-type]


@given(
    st.lists(st.integers(0, 9), min_size=1, max_size=300),
    st.integers(0, 0xFFFF),
    st.integers(1, 16),
    st.lists(st.integers(0, 2), max_size=300),
)
@settings(max_examples=300)
def test_property_order_and_accounting(
    jitter: list[int], start: int, max_packets: int, dups: list[int]
) -> None:
    """Displace packets by up to 9 slots, drop some, duplicate some: releases stay strictly increasing, each
    unique packet comes out at most once, and every push is accounted for."""
    n = len(jitter)
    keyed = sorted(range(n), key=lambda i: i + jitter[i])
    arrival: list[int] = []
    for k, i in enumerate(keyed):
        if jitter[i] == 9:  # dropped
            continue
        arrival.append(i)
        if k < len(dups) and dups[k] == 2:
            arrival.append(i)
    buf: ReorderBuffer[int] = ReorderBuffer(max_packets=max_packets, max_delay=0.005)
    out: list[int] = []
    now = 0.0
    for i in arrival:
        now += 0.001
        out += buf.push((start + i) & 0xFFFF, i, now)
        assert buf.buffered <= max_packets
        deadline = buf.next_deadline()
        assert deadline is None or deadline >= now
    out += buf.flush()
    assert out == sorted(set(out))
    assert buf.received == len(arrival)
    assert buf.received == len(out) + buf.duplicate + buf.late
    assert len(out) + buf.lost + buf.late >= len(set(arrival))
    assert buf.resets == 0 and buf.stray == 0


# -- jitter --------------------------------------------------------------------------------------------------------


def test_jitter_hand_computed() -> None:
    """8 kHz clock, 1000-tick (125 ms) packets; times chosen to be exact in binary.

    i  S     R (s)    R (ticks)  D = (R_i-R_{i-1}) - (S_i-S_{i-1})  J = J + (|D| - J)/16
    0  0     0        0          -                                  0
    1  1000  0.125    1000       0                                  0
    2  2000  0.3125   2500       500                                31.25
    3  3000  0.375    3000       -500                               31.25 + 468.75/16 = 60.546875
    4  4000  0.5      4000       0                                  60.546875 - 60.546875/16 = 56.7626953125
    """
    est = JitterEstimator(clock_rate=8000)
    got = [
        est.update(ts, arrival)
        for ts, arrival in [(0, 0.0), (1000, 0.125), (2000, 0.3125), (3000, 0.375), (4000, 0.5)]
    ]
    assert got == [0.0, 0.0, 31.25, 60.546875, 56.7626953125]
    assert est.jitter == 56.7626953125
    assert est.jitter_seconds == 56.7626953125 / 8000


def test_jitter_matches_rfc3550_integer_algorithm() -> None:
    """RFC 3550 §A.8 keeps 16*J in an int: ``jitter += d - ((jitter + 8) >> 4)``; the float J tracks it."""
    rng = random.Random(8)
    est = JitterEstimator(clock_rate=90000)
    scaled = 0
    transit_prev: int | None = None
    ts = 0
    arrival_ticks = 0
    for _ in range(2000):
        ts += 3600
        arrival_ticks += 3600 + rng.randint(-900, 900)
        est.update(ts & 0xFFFFFFFF, arrival_ticks / 90000)
        transit = arrival_ticks - ts
        if transit_prev is not None:
            d = abs(transit - transit_prev)
            scaled += d - ((scaled + 8) >> 4)
        transit_prev = transit
    assert est.jitter == pytest.approx(scaled / 16, abs=1.0)


def test_jitter_across_timestamp_wrap() -> None:
    plain = JitterEstimator()
    wrapped = JitterEstimator()
    base = 0xFFFFFFFF - 3600 * 5
    for i, late in enumerate([0, 0.01, 0, 0.02, 0, 0, 0.005, 0, 0, 0]):
        arrival = i * 0.04 + late
        plain.update(i * 3600, arrival)
        wrapped.update((base + i * 3600) & 0xFFFFFFFF, arrival)
    assert wrapped.jitter == pytest.approx(plain.jitter)
    assert 0 < wrapped.jitter < 3600


def test_jitter_constant_delay_is_zero() -> None:
    est = JitterEstimator()
    for i in range(100):
        est.update(i * 3000, 5.0 + i * 3000 / 90000)
    assert est.jitter == pytest.approx(0.0, abs=1e-6)


def test_jitter_bad_clock_rate() -> None:
    with pytest.raises(ValueError, match="clock_rate"):
        JitterEstimator(clock_rate=0)
