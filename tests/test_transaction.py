"""sip.transaction: the four RFC 3261 §17 state machines (+ RFC 6026 Accepted), driven directly in virtual time.

Each test feeds inputs with an explicit ``now`` and steps from one deadline to the next with ``run()``; what a
transaction sends and tells its user is drained with ``take()``. Endpoint-level behaviour (matching, routing,
loss between two endpoints) is in ``test_endpoint.py``.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.errors import LocalProtocolError
from sip.message import (
    NameAddr,
    SipMessage,
    SipRequest,
    SipResponse,
    Via,
    build_request,
    build_response,
)
from sip.transaction import (
    INVITE_CLIENT_TRANSITIONS,
    INVITE_SERVER_TRANSITIONS,
    NON_INVITE_CLIENT_TRANSITIONS,
    NON_INVITE_SERVER_TRANSITIONS,
    REMOTE_INPUTS,
    TIMER_INPUT,
    Input,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    Notice,
    PassUp,
    StartCancel,
    State,
    Table,
    TimedOut,
    Timer,
    TimerConfig,
    Transaction,
    TransactionKey,
    build_ack,
    build_cancel,
    response_input,
    send_input,
)

BRANCH = "z9hG4bKtest1"
NO_C = TimerConfig(timer_c=None)
DEFAULT = TimerConfig()


def make_request(method: str = "INVITE", branch: str = BRANCH, routes: tuple[str, ...] = ()) -> SipRequest:
    return build_request(
        method,
        "sip:34020000001320000001@10.0.0.2:5060",
        via=Via("UDP", "10.0.0.1", 5060, (("branch", branch), ("rport", None))),
        from_=NameAddr.parse("<sip:34020000002000000001@3402000000>;tag=from1"),
        to=NameAddr.parse("<sip:34020000001320000001@3402000000>"),
        call_id="call-1@10.0.0.1",
        cseq=7,
        headers=[("Route", r) for r in routes] + [("Contact", "<sip:34020000002000000001@10.0.0.1:5060>")],
    )


def respond(request: SipRequest, status: int, tag: str | None = "to1") -> SipResponse:
    return build_response(request, status, to_tag=tag)


def client(
    method: str = "INVITE", *, reliable: bool = False, config: TimerConfig = NO_C, now: float = 0.0,
    routes: tuple[str, ...] = (),
) -> InviteClientTransaction | NonInviteClientTransaction:
    req = make_request(method, routes=routes)
    key = TransactionKey(server=False, method=method, branch=BRANCH)
    if method == "INVITE":
        return InviteClientTransaction(key, req, config, reliable, now)
    return NonInviteClientTransaction(key, req, config, reliable, now)


def invite_client(**kwargs: object) -> InviteClientTransaction:
    txn = client("INVITE", **kwargs)  # type: ignore[arg-type]
    assert isinstance(txn, InviteClientTransaction)
    return txn


def server(
    method: str = "INVITE", *, reliable: bool = False, config: TimerConfig = NO_C
) -> InviteServerTransaction | NonInviteServerTransaction:
    req = make_request(method)
    key = TransactionKey(server=True, method=method, branch=BRANCH, sent_by="10.0.0.1:5060")
    if method == "INVITE":
        return InviteServerTransaction(key, req, config, reliable)
    return NonInviteServerTransaction(key, req, config, reliable)


def run(txn: Transaction, until: float) -> tuple[list[tuple[float, SipMessage]], list[tuple[float, Notice]]]:
    """Fire every deadline up to ``until`` at its exact time; what was sent and noticed, with times.

    Whatever was pending before the first firing is drained first and reported at time -1.
    """
    out, notices = txn.take()
    sent: list[tuple[float, SipMessage]] = [(-1.0, m) for m in out]
    told: list[tuple[float, Notice]] = [(-1.0, n) for n in notices]
    while (deadline := txn.deadline) is not None and deadline <= until:
        txn.on_timer(deadline)
        out, notices = txn.take()
        sent += [(deadline, m) for m in out]
        told += [(deadline, n) for n in notices]
    return sent, told


def drain(txn: Transaction) -> tuple[list[SipMessage], list[Notice]]:
    return txn.take()


def times(sent: list[tuple[float, SipMessage]]) -> list[float]:
    return [t for t, _ in sent]


# --------------------------------------------------------------------------------------------------------
# The tables themselves


TABLES: Mapping[str, Table] = {
    "invite client": INVITE_CLIENT_TRANSITIONS,
    "non-invite client": NON_INVITE_CLIENT_TRANSITIONS,
    "invite server": INVITE_SERVER_TRANSITIONS,
    "non-invite server": NON_INVITE_SERVER_TRANSITIONS,
}


@pytest.mark.parametrize("name", TABLES)
def test_every_state_can_reach_terminated_and_terminated_is_final(name: str) -> None:
    table = TABLES[name]
    assert table[State.TERMINATED] == {}
    for state in table:
        seen = {state}
        frontier = [state]
        while frontier:
            for nxt in table[frontier.pop()].values():
                assert nxt in table, f"{name}: {nxt} has no row"
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert State.TERMINATED in seen, f"{name}: {state} never terminates"


@pytest.mark.parametrize(
    ("name", "timers"),
    [
        ("invite client", {Timer.A, Timer.B, Timer.C, Timer.D, Timer.M}),
        ("non-invite client", {Timer.E, Timer.F, Timer.K}),
        ("invite server", {Timer.G, Timer.H, Timer.I, Timer.L}),
        ("non-invite server", {Timer.J}),
    ],
)
def test_each_kind_uses_its_own_timers(name: str, timers: set[Timer]) -> None:
    used = {inp for row in TABLES[name].values() for inp in row if inp.name.startswith("TIMER_")}
    assert used == {TIMER_INPUT[t] for t in timers}


def test_all_thirteen_timers_map_to_inputs() -> None:
    assert len(TIMER_INPUT) == 13
    assert {inp.value for inp in TIMER_INPUT.values()} == {f"Timer {t.value}" for t in Timer}


def test_clients_never_see_requests_and_servers_never_see_responses() -> None:
    for name, table in TABLES.items():
        inputs = {inp for row in table.values() for inp in row}
        if "client" in name:
            assert not inputs & {Input.REQUEST, Input.ACK, Input.SEND_1XX, Input.SEND_2XX, Input.SEND_300_699}
        else:
            assert not inputs & {Input.RESP_1XX, Input.RESP_2XX, Input.RESP_300_699, Input.CANCEL}


def test_only_invite_transactions_have_accepted() -> None:
    assert State.ACCEPTED in INVITE_CLIENT_TRANSITIONS
    assert State.ACCEPTED in INVITE_SERVER_TRANSITIONS
    assert State.ACCEPTED not in NON_INVITE_CLIENT_TRANSITIONS
    assert State.ACCEPTED not in NON_INVITE_SERVER_TRANSITIONS


@pytest.mark.parametrize(
    ("status", "received", "sent"),
    [
        (100, Input.RESP_1XX, Input.SEND_1XX),
        (199, Input.RESP_1XX, Input.SEND_1XX),
        (200, Input.RESP_2XX, Input.SEND_2XX),
        (299, Input.RESP_2XX, Input.SEND_2XX),
        (300, Input.RESP_300_699, Input.SEND_300_699),
        (487, Input.RESP_300_699, Input.SEND_300_699),
        (699, Input.RESP_300_699, Input.SEND_300_699),
    ],
)
def test_status_classes(status: int, received: Input, sent: Input) -> None:
    assert response_input(status) is received
    assert send_input(status) is sent
    assert received in REMOTE_INPUTS
    assert sent not in REMOTE_INPUTS


@pytest.mark.parametrize(
    "kwargs",
    [{"t1": 0}, {"t1": -1}, {"t1": 1.0, "t2": 0.5}, {"t4": -1}, {"timer_c": 0}, {"timer_d": -1}],
)
def test_timer_config_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TimerConfig(**kwargs)


# --------------------------------------------------------------------------------------------------------
# INVITE client (RFC 3261 §17.1.1, RFC 6026 §7.2)


def test_invite_client_timer_a_doubles_until_timer_b() -> None:
    txn = invite_client()
    assert txn.state is State.CALLING
    assert txn.timers == {Timer.A: 0.5, Timer.B: 32.0}
    sent, told = run(txn, 100)
    # the INVITE at 0, then Timer A at T1, 3T1, 7T1 ... (intervals T1, 2T1, 4T1, 8T1, 16T1, 32T1)
    assert times(sent) == [-1.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(m is txn.request for _, m in sent)
    assert told == [(32.0, TimedOut(Timer.B))]
    assert txn.state is State.TERMINATED
    assert txn.deadline is None


def test_invite_client_timers_scale_with_t1() -> None:
    txn = invite_client(config=TimerConfig(t1=0.1, t2=4.0, timer_c=None), now=100.0)
    sent, told = run(txn, 1000)
    assert [round(t - 100, 6) for t in times(sent)[1:]] == [0.1, 0.3, 0.7, 1.5, 3.1, 6.3]
    assert [(round(t - 100, 6), n) for t, n in told] == [(6.4, TimedOut(Timer.B))]


def test_invite_client_over_reliable_transport_never_retransmits() -> None:
    txn = invite_client(reliable=True)
    assert txn.timers == {Timer.B: 32.0}
    sent, told = run(txn, 100)
    assert times(sent) == [-1.0]
    assert told == [(32.0, TimedOut(Timer.B))]


def test_invite_client_provisional_stops_a_and_b_and_is_passed_up() -> None:
    txn = invite_client()
    drain(txn)
    trying = respond(txn.request, 100, tag=None)
    assert txn.on_response(trying, 0.2)
    assert txn.state is State.PROCEEDING
    assert txn.timers == {}
    assert drain(txn) == ([], [PassUp(trying)])
    ringing = respond(txn.request, 180)
    txn.on_response(ringing, 1.0)
    assert drain(txn) == ([], [PassUp(ringing)])
    sent, told = run(txn, 1000)
    assert sent == [] and told == []
    assert txn.state is State.PROCEEDING  # without Timer C it waits for the TU to CANCEL


def test_invite_client_non_2xx_is_acked_and_absorbed_for_timer_d() -> None:
    txn = invite_client(routes=("<sip:proxy1;lr>", "<sip:proxy2;lr>"))
    drain(txn)
    busy = respond(txn.request, 486)
    txn.on_response(busy, 2.0)
    assert txn.state is State.COMPLETED
    out, notices = drain(txn)
    assert notices == [PassUp(busy)]
    assert len(out) == 1
    ack = out[0]
    assert isinstance(ack, SipRequest)
    assert ack == build_ack(txn.request, busy)
    assert txn.timers == {Timer.D: 34.0}
    # retransmissions of the final: ACK again, not passed up
    for t in (3.0, 10.0, 33.9):
        assert txn.on_response(busy, t)
        assert drain(txn) == ([ack], [])
    sent, told = run(txn, 100)
    assert sent == [] and told == []
    assert txn.state is State.TERMINATED


def test_ack_for_non_2xx_shape() -> None:
    invite = make_request("INVITE", routes=("<sip:proxy1;lr>", "<sip:proxy2;lr>"))
    busy = respond(invite, 486, tag="xyz")
    ack = build_ack(invite, busy)
    assert ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.headers.get_all("via") == [invite.headers.get_all("via")[0]]
    assert ack.top_via.branch == BRANCH  # same branch: it belongs to the INVITE transaction
    assert ack.to.tag == "xyz"
    assert ack.from_ == invite.from_
    assert ack.call_id == invite.call_id
    assert (ack.cseq.number, ack.cseq.method) == (7, "ACK")
    assert ack.headers.get_all("route") == ["<sip:proxy1;lr>", "<sip:proxy2;lr>"]
    assert ack.body == b""
    assert bytes(ack).count(b"Content-Length: 0") == 1


def test_cancel_shape() -> None:
    invite = make_request("INVITE", routes=("<sip:proxy1;lr>",))
    cancel = build_cancel(invite)
    assert cancel.method == "CANCEL"
    assert cancel.uri == invite.uri
    assert cancel.top_via == invite.top_via
    assert len(cancel.vias) == 1
    assert cancel.to == invite.to and cancel.to.tag is None
    assert cancel.from_ == invite.from_
    assert (cancel.cseq.number, cancel.cseq.method) == (7, "CANCEL")
    assert cancel.headers.get_all("route") == ["<sip:proxy1;lr>"]


def test_invite_client_non_2xx_over_reliable_transport_terminates_at_once() -> None:
    txn = invite_client(reliable=True)
    drain(txn)
    txn.on_response(respond(txn.request, 404), 1.0)
    out, notices = drain(txn)
    assert [m.method for m in out if isinstance(m, SipRequest)] == ["ACK"]
    assert len(notices) == 1
    assert txn.state is State.TERMINATED  # Timer D = 0


def test_invite_client_2xx_enters_accepted_and_passes_retransmissions_up() -> None:
    txn = invite_client()
    drain(txn)
    ok = respond(txn.request, 200)
    txn.on_response(ok, 1.0)
    assert txn.state is State.ACCEPTED
    assert txn.timers == {Timer.M: 33.0}
    assert drain(txn) == ([], [PassUp(ok)])  # the TU (dialog) sends the 2xx ACK, not the transaction
    assert txn.on_response(ok, 5.0)
    assert drain(txn) == ([], [PassUp(ok)])
    other_fork = respond(txn.request, 200, tag="fork2")
    txn.on_response(other_fork, 6.0)
    assert drain(txn) == ([], [PassUp(other_fork)])
    # 1xx and non-2xx in Accepted: absorbed
    assert not txn.on_response(respond(txn.request, 180), 7.0)
    assert not txn.on_response(respond(txn.request, 500), 7.0)
    assert drain(txn) == ([], [])
    assert txn.timers == {Timer.M: 33.0}  # not restarted by retransmissions
    sent, told = run(txn, 100)
    assert sent == [] and told == []
    assert txn.state is State.TERMINATED


def test_invite_client_2xx_in_proceeding() -> None:
    txn = invite_client(reliable=True)
    txn.on_response(respond(txn.request, 183), 0.1)
    txn.on_response(respond(txn.request, 200), 0.2)
    assert txn.state is State.ACCEPTED
    assert txn.timers == {Timer.M: 32.2}  # Timer M runs on reliable transports too


def test_invite_client_absorbs_provisionals_after_final() -> None:
    txn = invite_client()
    txn.on_response(respond(txn.request, 404), 1.0)
    drain(txn)
    assert not txn.on_response(respond(txn.request, 180), 2.0)
    assert not txn.on_response(respond(txn.request, 200), 2.0)
    assert drain(txn) == ([], [])
    assert txn.state is State.COMPLETED


def test_cancel_in_proceeding_sends_cancel_and_rearms_timer_b() -> None:
    txn = invite_client()
    txn.on_response(respond(txn.request, 180), 1.0)
    drain(txn)
    txn.cancel(2.0)
    assert txn.cancelled
    assert drain(txn) == ([], [StartCancel(build_cancel(txn.request))])
    assert txn.timers == {Timer.B: 34.0}  # RFC 3261 §9.1: 64*T1 after the CANCEL
    txn.cancel(3.0)  # a second wish changes nothing
    assert drain(txn) == ([], [])
    # the usual outcome: 487, ACKed
    txn.on_response(respond(txn.request, 487), 4.0)
    out, notices = drain(txn)
    assert [m.method for m in out if isinstance(m, SipRequest)] == ["ACK"]
    assert txn.state is State.COMPLETED


def test_cancelled_invite_with_no_final_times_out_64_t1_after_cancel() -> None:
    txn = invite_client()
    txn.on_response(respond(txn.request, 100, tag=None), 1.0)
    txn.cancel(10.0)
    sent, told = run(txn, 1000)
    assert told[-1] == (42.0, TimedOut(Timer.B))
    assert txn.state is State.TERMINATED


def test_cancel_in_calling_waits_for_a_provisional() -> None:
    txn = invite_client()
    drain(txn)
    txn.cancel(0.1)
    assert txn.cancel_pending and not txn.cancelled
    assert drain(txn) == ([], [])  # §9.1: no CANCEL before a provisional response
    assert Timer.A in txn.timers  # the INVITE is still retransmitted
    ringing = respond(txn.request, 180)
    txn.on_response(ringing, 0.3)
    assert drain(txn) == ([], [PassUp(ringing), StartCancel(build_cancel(txn.request))])
    assert txn.timers == {Timer.B: 32.3}


def test_cancel_in_calling_then_final_sends_no_cancel() -> None:
    txn = invite_client()
    txn.cancel(0.1)
    txn.on_response(respond(txn.request, 603), 0.2)
    out, notices = drain(txn)
    assert not any(isinstance(n, StartCancel) for n in notices)
    assert txn.state is State.COMPLETED


def test_cancel_pending_in_calling_still_times_out_with_b() -> None:
    txn = invite_client()
    txn.cancel(0.1)
    _, told = run(txn, 100)
    assert told == [(32.0, TimedOut(Timer.B))]


def test_cancel_after_final_is_misuse() -> None:
    txn = invite_client()
    txn.on_response(respond(txn.request, 200), 1.0)
    with pytest.raises(LocalProtocolError, match="cancel is not allowed in state Accepted"):
        txn.cancel(2.0)


def test_timer_c_cancels_an_invite_stuck_in_proceeding() -> None:
    txn = invite_client(config=TimerConfig(timer_c=180.0))
    assert txn.timers == {Timer.A: 0.5, Timer.B: 32.0, Timer.C: 180.0}
    txn.on_response(respond(txn.request, 100, tag=None), 0.1)
    assert txn.timers == {Timer.C: 180.0}  # 100 Trying does not restart Timer C
    txn.on_response(respond(txn.request, 180), 60.0)
    assert txn.timers == {Timer.C: 240.0}  # other provisionals do (§16.7)
    drain(txn)
    sent, told = run(txn, 240.0)
    assert told == [(240.0, StartCancel(build_cancel(txn.request)))]
    assert txn.timers == {Timer.B: 272.0}
    txn.on_response(respond(txn.request, 181), 250.0)
    assert txn.timers == {Timer.B: 272.0}  # no Timer C after the CANCEL
    _, told = run(txn, 1000)
    assert told == [(-1.0, PassUp(respond(txn.request, 181))), (272.0, TimedOut(Timer.B))]


def test_timer_c_in_calling_defers_the_cancel() -> None:
    txn = invite_client(config=TimerConfig(t1=10.0, t2=40.0, timer_c=5.0))  # B at 640, C at 5
    _, told = run(txn, 6.0)
    assert told == []
    assert txn.cancel_pending
    assert Timer.C not in txn.timers
    txn.on_response(respond(txn.request, 100, tag=None), 7.0)
    _, notices = drain(txn)
    assert isinstance(notices[-1], StartCancel)


# --------------------------------------------------------------------------------------------------------
# non-INVITE client (RFC 3261 §17.1.2)


def test_non_invite_client_timer_e_doubles_capped_at_t2_until_timer_f() -> None:
    txn = client("MESSAGE")
    assert txn.state is State.TRYING
    assert txn.timers == {Timer.E: 0.5, Timer.F: 32.0}
    sent, told = run(txn, 100)
    # intervals 0.5, 1, 2, 4, 4, 4 ...: capped at T2
    assert times(sent) == [-1.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert told == [(32.0, TimedOut(Timer.F))]
    assert txn.state is State.TERMINATED


def test_non_invite_client_timer_e_is_t2_in_proceeding() -> None:
    txn = client("MESSAGE")
    run(txn, 0.5)  # one retransmission; next E due at 1.5
    trying = respond(txn.request, 100, tag=None)
    txn.on_response(trying, 1.0)
    assert txn.state is State.PROCEEDING
    assert txn.timers == {Timer.E: 1.5, Timer.F: 32.0}  # Timer E keeps its deadline ...
    sent, told = run(txn, 100)
    assert told[0] == (-1.0, PassUp(trying))
    # ... and every firing in Proceeding re-arms it with T2
    assert times(sent) == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert told[-1] == (32.0, TimedOut(Timer.F))


def test_non_invite_client_small_t2_caps_early() -> None:
    txn = client("REGISTER", config=TimerConfig(t1=0.5, t2=1.0, timer_c=None))
    sent, _ = run(txn, 6.0)
    assert times(sent) == [-1.0, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5]


def test_non_invite_client_final_starts_timer_k_and_absorbs_retransmissions() -> None:
    txn = client("MESSAGE")
    drain(txn)
    ok = respond(txn.request, 200)
    txn.on_response(ok, 2.0)
    assert txn.state is State.COMPLETED
    assert txn.timers == {Timer.K: 7.0}  # T4
    assert drain(txn) == ([], [PassUp(ok)])
    assert txn.on_response(ok, 3.0)
    assert not txn.on_response(respond(txn.request, 100, tag=None), 3.0)  # 1xx in Completed: no row
    assert drain(txn) == ([], [])
    sent, told = run(txn, 100)
    assert sent == [] and told == []
    assert txn.state is State.TERMINATED


@pytest.mark.parametrize("status", [200, 202, 401, 404, 500, 603])
def test_non_invite_client_any_final_completes(status: int) -> None:
    txn = client("REGISTER")
    txn.on_response(respond(txn.request, status), 1.0)
    assert txn.state is State.COMPLETED


def test_non_invite_client_reliable_has_no_e_and_zero_k() -> None:
    txn = client("MESSAGE", reliable=True)
    assert txn.timers == {Timer.F: 32.0}
    txn.on_response(respond(txn.request, 200), 1.0)
    assert txn.state is State.TERMINATED
    out, notices = drain(txn)
    assert len(out) == 1 and len(notices) == 1


def test_non_invite_client_reliable_timeout() -> None:
    txn = client("MESSAGE", reliable=True)
    sent, told = run(txn, 100)
    assert times(sent) == [-1.0]
    assert told == [(32.0, TimedOut(Timer.F))]


# --------------------------------------------------------------------------------------------------------
# INVITE server (RFC 3261 §17.2.1, RFC 6026 §7.1)


def test_invite_server_request_retransmission_in_proceeding_resends_last_provisional() -> None:
    txn = server("INVITE")
    assert txn.state is State.PROCEEDING
    assert txn.on_request(txn.request, 0.1)  # nothing sent yet: nothing to repeat
    assert drain(txn) == ([], [])
    trying = respond(txn.request, 100, tag=None)
    txn.send_response(trying, 0.1)
    assert drain(txn) == ([trying], [])
    txn.on_request(txn.request, 0.5)
    assert drain(txn) == ([trying], [])
    ringing = respond(txn.request, 180)
    txn.send_response(ringing, 1.0)
    txn.on_request(txn.request, 1.5)
    assert drain(txn) == ([ringing, ringing], [])
    assert txn.timers == {}


def test_invite_server_non_2xx_retransmitted_by_timer_g_until_timer_h() -> None:
    txn = server("INVITE")
    busy = respond(txn.request, 486)
    txn.send_response(busy, 0.0)
    assert txn.state is State.COMPLETED
    assert txn.timers == {Timer.G: 0.5, Timer.H: 32.0}
    sent, told = run(txn, 100)
    assert times(sent) == [-1.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(m is busy for _, m in sent)
    assert told == [(32.0, TimedOut(Timer.H))]
    assert txn.state is State.TERMINATED


def test_invite_server_ack_confirms_and_timer_i_absorbs() -> None:
    txn = server("INVITE")
    busy = respond(txn.request, 486)
    txn.send_response(busy, 0.0)
    run(txn, 2.0)
    ack = build_ack(txn.request, busy)
    assert txn.on_request(ack, 2.0)
    assert txn.state is State.CONFIRMED
    assert txn.acked
    assert txn.timers == {Timer.I: 7.0}  # T4; G and H stopped
    assert txn.on_request(ack, 3.0)  # ACK retransmission absorbed
    assert not txn.on_request(txn.request, 3.0)  # INVITE retransmission: no row in Confirmed
    assert drain(txn) == ([], [])
    sent, told = run(txn, 100)
    assert sent == [] and told == []
    assert txn.state is State.TERMINATED


def test_invite_server_completed_resends_final_on_invite_retransmission() -> None:
    txn = server("INVITE")
    nf = respond(txn.request, 404)
    txn.send_response(nf, 0.0)
    drain(txn)
    txn.on_request(txn.request, 0.2)
    assert drain(txn) == ([nf], [])


def test_invite_server_reliable_no_g_and_zero_i() -> None:
    txn = server("INVITE", reliable=True)
    busy = respond(txn.request, 486)
    txn.send_response(busy, 0.0)
    assert txn.timers == {Timer.H: 32.0}  # Timer H on every transport
    txn.on_request(build_ack(txn.request, busy), 1.0)
    assert txn.state is State.TERMINATED


def test_invite_server_reliable_timer_h() -> None:
    txn = server("INVITE", reliable=True)
    txn.send_response(respond(txn.request, 500), 0.0)
    sent, told = run(txn, 100)
    assert times(sent) == [-1.0]
    assert told == [(32.0, TimedOut(Timer.H))]


def test_invite_server_2xx_retransmitted_in_accepted_until_ack() -> None:
    txn = server("INVITE")
    ok = respond(txn.request, 200)
    txn.send_response(ok, 0.0)
    assert txn.state is State.ACCEPTED
    assert txn.timers == {Timer.G: 0.5, Timer.L: 32.0}
    sent, _ = run(txn, 4.0)
    assert times(sent) == [-1.0, 0.5, 1.5, 3.5]
    assert all(m is ok for _, m in sent)
    assert txn.on_request(txn.request, 4.0)  # INVITE retransmission: absorbed (RFC 6026)
    assert drain(txn) == ([], [])
    ack = build_request(
        "ACK", txn.request.uri, via=Via("UDP", "10.0.0.1", 5060, (("branch", "z9hG4bKother"),)),
        from_=txn.request.from_, to=ok.to, call_id=txn.request.call_id, cseq=7,
    )
    txn.on_request(ack, 5.0)
    assert txn.acked
    assert txn.state is State.ACCEPTED  # stays to absorb INVITE retransmissions
    assert txn.timers == {Timer.L: 32.0}
    sent, told = run(txn, 100)
    assert sent == [] and told == []
    assert txn.state is State.TERMINATED


def test_invite_server_2xx_never_acked_reports_timer_l() -> None:
    txn = server("INVITE")
    txn.send_response(respond(txn.request, 200), 0.0)
    sent, told = run(txn, 100)
    # G backoff capped at T2: 0.5, 1.5, 3.5, 7.5, then every 4 s until L at 64*T1
    assert times(sent) == [-1.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert told == [(32.0, TimedOut(Timer.L))]
    assert txn.state is State.TERMINATED


def test_invite_server_2xx_resent_by_tu_in_accepted() -> None:
    txn = server("INVITE")
    ok = respond(txn.request, 200)
    txn.send_response(ok, 0.0)
    drain(txn)
    ok2 = respond(txn.request, 200, tag="to1")
    txn.send_response(ok2, 0.2)
    assert drain(txn) == ([ok2], [])
    assert txn.timers == {Timer.G: 0.5, Timer.L: 32.0}  # the schedule does not restart


def test_invite_server_2xx_reliable_has_only_timer_l() -> None:
    txn = server("INVITE", reliable=True)
    txn.send_response(respond(txn.request, 200), 0.0)
    assert txn.timers == {Timer.L: 32.0}


@pytest.mark.parametrize(
    ("first", "second"),
    [(486, 200), (486, 486), (486, 180), (200, 486), (200, 180)],
)
def test_invite_server_rejects_responses_after_a_final(first: int, second: int) -> None:
    txn = server("INVITE")
    txn.send_response(respond(txn.request, first), 0.0)
    with pytest.raises(LocalProtocolError, match="not allowed in state"):
        txn.send_response(respond(txn.request, second), 0.1)


def test_invite_server_rejects_responses_once_terminated() -> None:
    txn = server("INVITE", reliable=True)
    busy = respond(txn.request, 486)
    txn.send_response(busy, 0.0)
    txn.on_request(build_ack(txn.request, busy), 0.1)
    with pytest.raises(LocalProtocolError, match="send 300-699 is not allowed in state Terminated"):
        txn.send_response(busy, 0.2)


def test_ack_in_proceeding_is_absorbed() -> None:
    txn = server("INVITE")
    assert not txn.on_request(build_ack(txn.request, respond(txn.request, 486)), 0.1)
    assert txn.state is State.PROCEEDING


# --------------------------------------------------------------------------------------------------------
# non-INVITE server (RFC 3261 §17.2.2)


def test_non_invite_server_absorbs_in_every_state() -> None:
    txn = server("MESSAGE")
    assert txn.state is State.TRYING
    txn.on_request(txn.request, 0.1)
    assert drain(txn) == ([], [])  # Trying: no response to repeat
    trying = respond(txn.request, 100, tag=None)
    txn.send_response(trying, 0.2)
    assert txn.state is State.PROCEEDING
    drain(txn)
    txn.on_request(txn.request, 0.3)
    assert drain(txn) == ([trying], [])
    ok = respond(txn.request, 200)
    txn.send_response(ok, 0.4)
    assert txn.state is State.COMPLETED
    drain(txn)
    txn.on_request(txn.request, 0.5)
    assert drain(txn) == ([ok], [])
    assert txn.timers == {Timer.J: 32.4}
    sent, told = run(txn, 100)
    assert sent == [] and told == []
    assert txn.state is State.TERMINATED


def test_non_invite_server_reliable_terminates_on_final() -> None:
    txn = server("MESSAGE", reliable=True)
    txn.send_response(respond(txn.request, 200), 0.0)
    assert txn.state is State.TERMINATED  # Timer J = 0


def test_non_invite_server_has_no_timers_until_the_tu_answers() -> None:
    txn = server("MESSAGE")
    assert txn.deadline is None


def test_non_invite_server_rejects_second_final() -> None:
    txn = server("MESSAGE")
    txn.send_response(respond(txn.request, 200), 0.0)
    with pytest.raises(LocalProtocolError, match="NonInviteServerTransaction: send 2xx is not allowed"):
        txn.send_response(respond(txn.request, 200), 0.1)


def test_non_invite_server_ignores_ack() -> None:
    txn = server("MESSAGE")
    assert not txn.on_request(build_ack(txn.request, respond(txn.request, 400)), 0.0)


def test_final_sent_and_last_response() -> None:
    txn = server("INVITE")
    assert not txn.final_sent
    txn.send_response(respond(txn.request, 180), 0.0)
    assert not txn.final_sent
    txn.send_response(respond(txn.request, 200), 0.0)
    assert txn.final_sent
    assert txn.last_response is not None and txn.last_response.status == 200


def test_repr_names_state_and_timers() -> None:
    txn = invite_client()
    assert repr(txn) == f"<InviteClientTransaction INVITE {BRANCH} CALLING [A@0.5, B@32]>"


def test_on_timer_fires_overdue_timers_in_order() -> None:
    """A late ``handle_timer`` (the loop was busy) fires what is due, earliest first, then moves on."""
    txn = invite_client()
    drain(txn)
    txn.on_timer(40.0)  # A (0.5) fires once, re-armed at 41; B (32) terminates
    out, notices = drain(txn)
    assert len(out) == 1
    assert notices == [TimedOut(Timer.B)]
    assert txn.state is State.TERMINATED


# --------------------------------------------------------------------------------------------------------
# Properties: any sequence of remote inputs and time never raises, and every transaction ends


_STATUSES = st.sampled_from([100, 180, 183, 200, 202, 401, 404, 486, 487, 500, 603])


@settings(max_examples=200, deadline=None)
@given(
    method=st.sampled_from(["INVITE", "MESSAGE"]),
    reliable=st.booleans(),
    steps=st.lists(st.tuples(st.floats(0, 20), _STATUSES, st.booleans()), max_size=12),
)
def test_client_transactions_absorb_anything_and_terminate(
    method: str, reliable: bool, steps: list[tuple[float, int, bool]]
) -> None:
    txn = client(method, reliable=reliable, config=DEFAULT)
    now = 0.0
    for delay, status, cancel in steps:
        now += delay
        txn.on_timer(now)
        txn.on_response(respond(txn.request, status), now)
        if cancel and isinstance(txn, InviteClientTransaction) and txn.state in (State.CALLING, State.PROCEEDING):
            txn.cancel(now)
        assert txn.deadline is None or txn.deadline > now
    run(txn, now + 10_000)
    assert txn.state is State.TERMINATED


@settings(max_examples=200, deadline=None)
@given(
    method=st.sampled_from(["INVITE", "MESSAGE"]),
    reliable=st.booleans(),
    steps=st.lists(st.tuples(st.floats(0, 20), st.sampled_from(["request", "ack", "respond"]), _STATUSES),
                   max_size=12),
)
def test_server_transactions_absorb_anything_and_terminate(
    method: str, reliable: bool, steps: list[tuple[float, str, int]]
) -> None:
    txn = server(method, reliable=reliable, config=DEFAULT)
    now = 0.0
    for delay, action, status in steps:
        now += delay
        txn.on_timer(now)
        if action == "request":
            txn.on_request(txn.request, now)
        elif action == "ack":
            txn.on_request(build_ack(txn.request, respond(txn.request, 400)), now)
        elif not txn.final_sent and not txn.terminated:
            txn.send_response(respond(txn.request, status), now)
    if not txn.final_sent:
        txn.send_response(respond(txn.request, 500), now)
    run(txn, now + 10_000)
    assert txn.state is State.TERMINATED
