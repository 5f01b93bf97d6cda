"""sip.endpoint: two endpoints back to back in virtual time (``sip_pair.EndpointPair``), with loss.

Style of aioquic's ``test_connect_with_loss_*``: drop chosen datagrams, run the clock to the next deadline, and
count exactly what went over the wire. Every test ends with both transaction tables empty once the timers
have run out.
"""

from __future__ import annotations

import itertools
import random

import pytest
from sip_pair import A_ADDR, B_ADDR, EndpointPair, counter_tokens

from sip.dialog import Dialog
from sip.endpoint import (
    EndpointConfig,
    MalformedReceived,
    Overloaded,
    Peer,
    RequestCancelled,
    RequestReceived,
    ResponseReceived,
    SipEndpoint,
    StrayResponse,
    TransactionTimedOut,
    Transport,
    client_key,
    server_key,
)
from sip.errors import LocalProtocolError
from sip.message import (
    Headers,
    NameAddr,
    SipRequest,
    SipResponse,
    Via,
    build_request,
    build_response,
    parse_message,
)
from sip.transaction import State, Timer, TransactionKey

UDP_A = Peer(Transport.UDP, A_ADDR)


def received(pair: EndpointPair, side: str = "b") -> RequestReceived:
    event = pair.event_of(side, RequestReceived)
    assert isinstance(event, RequestReceived)
    return event


def responses(pair: EndpointPair, side: str = "a") -> list[ResponseReceived]:
    return [e for e in pair.events(side) if isinstance(e, ResponseReceived)]


def labels(pair: EndpointPair, side: str) -> list[str]:
    return [s.label for s in pair.sent(side)]


def finish(pair: EndpointPair) -> None:
    """Run every timer out; nothing may be left behind."""
    pair.run_out()
    assert pair.a.transaction_count == 0
    assert pair.b.transaction_count == 0
    assert pair.a.get_timer() is None
    assert pair.b.get_timer() is None


def wire_request(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


BAD_CSEQ = wire_request(
    "MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\n"
    "Via: SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bKbad1\n"
    "From: <sip:34020000001320000001@3402000000>;tag=f1\n"
    "To: <sip:34020000002000000001@3402000000>\n"
    "Call-ID: broken-1\n"
    "CSeq: one MESSAGE\n"
    "Content-Length: 0\n\n"
)


# --------------------------------------------------------------------------------------------------------
# Non-INVITE over UDP


def test_message_round_trip_and_cleanup() -> None:
    pair = EndpointPair()
    req = pair.request("MESSAGE", body=b"<Notify/>", content_type="Application/MANSCDP+xml")
    key = pair.send(req)
    assert key == TransactionKey(server=False, method="MESSAGE", branch=req.top_via.branch or "")
    assert pair.transfer() == 1
    event = received(pair)
    assert event.peer == UDP_A
    assert event.key is not None and event.key.server
    assert event.request.body == b"<Notify/>"
    pair.respond(event.request, 200)
    pair.transfer()
    (resp,) = responses(pair)
    assert resp.response.status == 200
    assert resp.key == key
    assert resp.peer == Peer(Transport.UDP, B_ADDR)
    assert pair.a.transaction_state(key) is State.COMPLETED
    assert pair.b.transaction_state(event.key) is State.COMPLETED
    # Timer K (T4) on a, Timer J (64*T1) on b
    assert pair.a.get_timer() == 5.0
    assert pair.b.get_timer() == 32.0
    pair.run(5.0)
    assert pair.a.transaction_count == 0 and pair.b.transaction_count == 1
    finish(pair)
    assert labels(pair, "a") == ["MESSAGE"]
    assert labels(pair, "b") == ["200 MESSAGE"]


def test_message_with_lost_request_is_retransmitted_by_timer_e() -> None:
    pair = EndpointPair()
    pair.send(pair.request("MESSAGE"))
    pair.drop("a")
    pair.run(0.5)  # Timer E: retransmitted and delivered
    event = received(pair)
    assert pair.now == 0.5
    pair.respond(event.request, 200)
    pair.transfer()
    assert [r.response.status for r in responses(pair)] == [200]
    finish(pair)
    assert [s.time for s in pair.sent("a", "MESSAGE")] == [0.0, 0.5]


def test_message_with_lost_response_is_answered_again_from_completed() -> None:
    pair = EndpointPair()
    pair.send(pair.request("MESSAGE"))
    pair.transfer()
    event = received(pair)
    pair.respond(event.request, 200)
    pair.drop("b")
    pair.run(0.5)  # a retransmits; b's Completed state re-sends the 200
    assert pair.events("b") == []  # the retransmission never surfaces
    assert [r.response.status for r in responses(pair)] == [200]
    finish(pair)
    assert labels(pair, "b") == ["200 MESSAGE", "200 MESSAGE"]


def test_request_retransmission_in_trying_is_absorbed_silently() -> None:
    pair = EndpointPair()
    pair.send(pair.request("MESSAGE"))
    pair.transfer()
    event = received(pair)
    pair.run(3.5)  # three retransmissions while the TU thinks
    assert pair.events("b") == []
    assert labels(pair, "b") == []
    pair.respond(event.request, 202)
    pair.transfer()
    finish(pair)


def test_request_retransmission_in_proceeding_gets_the_provisional() -> None:
    pair = EndpointPair()
    pair.send(pair.request("MESSAGE"))
    pair.transfer()
    event = received(pair)
    pair.respond(event.request, 100)
    pair.transfer()
    pair.run(4.5)  # E at 0.5, then T2 later (Proceeding): 4.5
    assert [s.time for s in pair.sent("a", "MESSAGE")] == [0.0, 0.5, 4.5]
    assert labels(pair, "b") == ["100 MESSAGE", "100 MESSAGE", "100 MESSAGE"]
    assert pair.events("b") == []
    # §17.1.2.2: every provisional in Proceeding goes up (the TU sees the repeats)
    assert [r.response.status for r in responses(pair)] == [100, 100, 100]
    pair.respond(event.request, 200)
    pair.transfer()
    finish(pair)


def test_timer_f_with_a_dead_peer() -> None:
    pair = EndpointPair()
    pair.blackhole.add("b")
    req = pair.request("REGISTER")
    key = pair.send(req)
    pair.transfer()
    received(pair)
    pair.run(100)
    assert [s.time for s in pair.sent("a", "REGISTER")] == [
        0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5,
    ]
    (timeout,) = [e for e in pair.events("a") if isinstance(e, TransactionTimedOut)]
    assert timeout == TransactionTimedOut(key, req, Timer.F)
    assert pair.a.transaction_count == 0
    # b's TU never answered: its transaction sits in Trying (no timer there) until it does
    assert pair.b.transaction_count == 1
    assert pair.b.get_timer() is None
    first = pair.sides["b"].events[0]
    assert isinstance(first, RequestReceived)
    pair.respond(first.request, 200)
    finish(pair)


def test_timer_f_with_no_peer_at_all() -> None:
    pair = EndpointPair()
    pair.send(pair.request("OPTIONS"))
    pair.lose_all()
    pair.run(31.9, deliver=False)
    assert pair.a.transaction_count == 1
    pair.run(32.0)
    assert [type(e) for e in pair.events("a")] == [TransactionTimedOut]
    assert len(pair.sent("a")) == 11


def test_timers_i_j_k_absorb_duplicates_then_let_go() -> None:
    """While I, J and K run, duplicates are absorbed; once they fire, the same bytes are new traffic again."""
    pair = EndpointPair()
    message = pair.request("MESSAGE")
    pair.send(message)
    pair.transfer()
    event = received(pair)
    ok = pair.respond(event.request, 200)
    pair.transfer()
    pair.events("a")
    # K (a, T4 = 5 s): a duplicated 200 is absorbed; J (b, 64*T1): a duplicated MESSAGE gets the 200 again
    pair.a.receive_datagram(bytes(ok), Peer(Transport.UDP, B_ADDR), 4.9)
    assert pair.events("a") == []
    pair.b.receive_datagram(bytes(message), UDP_A, 4.9)
    assert pair.events("b") == []
    pair.lose_all()
    assert labels(pair, "b") == ["200 MESSAGE", "200 MESSAGE"]
    pair.run(5.0)
    pair.a.receive_datagram(bytes(ok), Peer(Transport.UDP, B_ADDR), 5.0)
    assert [type(e) for e in pair.events("a")] == [StrayResponse]
    pair.run(32.0)
    pair.b.receive_datagram(bytes(message), UDP_A, 32.0)
    assert [type(e) for e in pair.events("b")] == [RequestReceived]  # a new transaction now
    pair.lose_all()
    pair.b.send_response(build_response(received_again(pair, message), 200, to_tag="x"), 32.0)
    # I (b, T4): a duplicated non-2xx ACK is absorbed while Confirmed, surfaces (key None) once gone
    invite = pair.request("INVITE")
    pair.send(invite)
    pair.transfer()
    event = received(pair)
    busy = pair.respond(event.request, 486)
    pair.transfer()
    (ack_sent,) = pair.sent("a", "ACK")
    assert event.key is not None
    assert pair.b.transaction_state(event.key) is State.CONFIRMED
    pair.b.receive_datagram(ack_sent.data, UDP_A, pair.now + 1)
    assert pair.events("b") == []
    pair.run(pair.now + 5.0)
    assert pair.b.transaction_state(event.key) is None
    pair.b.receive_datagram(ack_sent.data, UDP_A, pair.now)
    (stray_ack,) = pair.events("b")
    assert isinstance(stray_ack, RequestReceived) and stray_ack.key is None
    assert busy.status == 486
    finish(pair)


def received_again(pair: EndpointPair, request: SipRequest) -> SipRequest:
    (event,) = [e for e in pair.sides["b"].events if isinstance(e, RequestReceived)][-1:]
    assert event.request.call_id == request.call_id
    return event.request


# --------------------------------------------------------------------------------------------------------
# INVITE over UDP


def test_invite_is_answered_100_trying_at_once() -> None:
    pair = EndpointPair()
    pair.send(pair.request("INVITE"))
    pair.transfer()
    event = received(pair)
    assert labels(pair, "b") == ["100 INVITE"]
    trying = pair.sent("b")[0].msg
    assert isinstance(trying, SipResponse)
    assert trying.to.tag is None  # RFC 3261 §8.2.6.2: no tag on 100
    assert trying.headers.get("server") == "gb28181-gateway"
    (resp,) = responses(pair)
    assert resp.response.status == 100
    assert pair.a.transaction_state(client_key(event.request)) is State.PROCEEDING
    assert pair.a.get_timer() == 180.0  # A and B stopped; Timer C guard remains
    pair.respond(event.request, 486)
    pair.transfer()
    finish(pair)


def test_invite_timer_a_and_b_with_a_dead_peer() -> None:
    pair = EndpointPair()
    pair.blackhole.add("b")
    req = pair.request("INVITE")
    key = pair.send(req)
    pair.run(100)
    assert [s.time for s in pair.sent("a", "INVITE")] == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    events = pair.events("a")
    assert events == [TransactionTimedOut(key, req, Timer.B)]
    # b saw the INVITE once, and absorbed the six retransmissions (answering each with 100, lost)
    assert [type(e) for e in pair.events("b")] == [RequestReceived]
    assert labels(pair, "b") == ["100 INVITE"] * 7
    pair.blackhole.clear()
    b_event = pair.sides["b"].events[0]
    assert isinstance(b_event, RequestReceived)
    pair.respond(b_event.request, 480)
    finish(pair)


def test_invite_retransmissions_in_proceeding_get_the_last_provisional() -> None:
    pair = EndpointPair()
    pair.send(pair.request("INVITE"))
    pair.drop("a")
    pair.run(0.5)  # the INVITE arrives on its first retransmission
    event = received(pair)
    pair.respond(event.request, 180)
    pair.transfer()
    # a's INVITE retransmission crossing b's 180: b answers it with the 180 again
    pair.b.receive_datagram(bytes(event.request), UDP_A, pair.now)
    pair.collect()
    assert labels(pair, "b") == ["100 INVITE", "180 INVITE", "180 INVITE"]
    pair.transfer()
    assert [r.response.status for r in responses(pair)] == [100, 180, 180]
    pair.respond(event.request, 603)
    pair.transfer()
    finish(pair)


def test_invite_rejected_is_acked_by_the_transaction() -> None:
    pair = EndpointPair()
    req = pair.request("INVITE")
    key = pair.send(req)
    pair.transfer()
    event = received(pair)
    busy = pair.respond(event.request, 486)
    pair.transfer()
    assert [r.response.status for r in responses(pair)] == [100, 486]
    assert labels(pair, "a") == ["INVITE", "ACK"]
    ack = pair.sent("a", "ACK")[0].msg
    assert isinstance(ack, SipRequest)
    assert ack.top_via.branch == req.top_via.branch
    assert ack.to.tag == busy.to.tag
    assert pair.events("b") == []  # the non-2xx ACK is the transaction's business
    assert pair.a.transaction_state(key) is State.COMPLETED
    assert event.key is not None
    assert pair.b.transaction_state(event.key) is State.CONFIRMED
    assert pair.b.get_timer() == 5.0  # Timer I = T4
    assert pair.a.get_timer() == 32.0  # Timer D
    finish(pair)


def test_lost_ack_timer_g_resends_the_final_and_timer_d_re_acks() -> None:
    pair = EndpointPair()
    pair.send(pair.request("INVITE"))
    pair.transfer()
    event = received(pair)
    pair.respond(event.request, 486)
    pair.deliver("b")  # 486 delivered; a's ACK is queued ...
    pair.drop("a")  # lost
    assert event.key is not None
    assert pair.b.transaction_state(event.key) is State.COMPLETED
    pair.run(0.5)  # Timer G on b: 486 again; a (Completed, Timer D) re-sends the ACK, passes nothing up
    assert labels(pair, "b") == ["100 INVITE", "486 INVITE", "486 INVITE"]
    assert labels(pair, "a") == ["INVITE", "ACK", "ACK"]
    assert [r.response.status for r in responses(pair)] == [100, 486]
    assert pair.b.transaction_state(event.key) is State.CONFIRMED
    finish(pair)


def test_timer_g_backoff_and_timer_h_when_the_ack_never_comes() -> None:
    pair = EndpointPair()
    pair.send(pair.request("INVITE"))
    pair.transfer()
    event = received(pair)
    pair.blackhole.add("a")  # a's ACKs are all lost
    pair.respond(event.request, 404)
    pair.run(100)
    assert [s.time for s in pair.sent("b", "404 INVITE")] == [
        0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5,
    ]
    assert event.key is not None
    assert pair.events("b") == [TransactionTimedOut(event.key, event.request, Timer.H)]
    assert len(pair.sent("a", "ACK")) == 11  # Timer D absorbed each and re-ACKed
    finish(pair)


def test_invite_accepted_2xx_retransmitted_until_the_dialog_acks() -> None:
    pair = EndpointPair()
    invite = pair.request("INVITE")
    key = pair.send(invite)
    pair.transfer()
    event = received(pair)
    ok = pair.respond(event.request, 200, headers=[("Contact", "<sip:b@10.0.0.2:5060>")])
    pair.drop("b")  # the 200 is lost: b's Accepted state retransmits it (Timer G)
    assert event.key is not None
    assert pair.b.transaction_state(event.key) is State.ACCEPTED
    assert pair.b.get_timer() == 0.5
    pair.run(0.5)
    (resp,) = [r for r in responses(pair) if r.response.status == 200]
    assert resp.key == key
    assert pair.a.transaction_state(key) is State.ACCEPTED
    # the TU (dialog) ACKs the 2xx: a new branch, no transaction
    dialog = Dialog.from_uac(invite, resp.response)
    ack = dialog.create_ack(resp.response, pair.via("a"))
    ack_key = pair.send(ack)
    assert ack_key.method == "ACK"
    assert pair.a.transaction_count == 1  # just the INVITE (Accepted, Timer M)
    pair.transfer()
    b_ack = received(pair)
    assert b_ack.key is None
    assert b_ack.request.method == "ACK"
    pair.run(10)
    assert labels(pair, "b") == ["100 INVITE", "200 INVITE", "200 INVITE"]  # G stopped by the ACK
    assert pair.b.transaction_state(event.key) is State.ACCEPTED  # until Timer L
    assert pair.events("b") == []
    finish(pair)
    assert ok.status == 200


def test_invite_accepted_2xx_retransmissions_surface_for_re_ack() -> None:
    pair = EndpointPair()
    invite = pair.request("INVITE")
    key = pair.send(invite)
    pair.transfer()
    event = received(pair)
    pair.respond(event.request, 200)
    pair.transfer()
    first = [r for r in responses(pair) if r.response.status == 200]
    dialog = Dialog.from_uac(invite, first[0].response)
    ack = dialog.create_ack(first[0].response, pair.via("a"))
    pair.send(ack)
    pair.drop("a")  # ACK lost: b retransmits the 200; a's Accepted passes it up again
    pair.run(0.5)
    again = responses(pair)
    assert [(r.response.status, r.key) for r in again] == [(200, key)]
    pair.send(dialog.create_ack(again[0].response, pair.via("a")))
    pair.transfer()
    assert received(pair).key is None
    finish(pair)


def test_timer_l_reports_a_2xx_never_acked() -> None:
    pair = EndpointPair()
    pair.send(pair.request("INVITE"))
    pair.transfer()
    event = received(pair)
    pair.respond(event.request, 200)
    pair.run(100)  # a's TU never ACKs
    assert [s.time for s in pair.sent("b", "200 INVITE")] == [
        0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5,
    ]
    assert event.key is not None
    assert pair.events("b") == [TransactionTimedOut(event.key, event.request, Timer.L)]
    # a saw every retransmission (Accepted until Timer M) so that its dialog could have re-ACKed
    assert len([r for r in responses(pair) if r.response.status == 200]) == 11
    finish(pair)


def test_timer_m_then_stray_2xx_surfaces_without_a_key() -> None:
    pair = EndpointPair()
    invite = pair.request("INVITE")
    pair.send(invite)
    pair.transfer()
    event = received(pair)
    ok = pair.respond(event.request, 200)
    pair.transfer()
    pair.events("a")
    pair.run(32.0, deliver=False)  # M on a and L on b both at 32 (every G retransmission is held back)
    pair.lose_all()
    assert pair.a.transaction_count == 0
    pair.a.receive_datagram(bytes(ok), Peer(Transport.UDP, B_ADDR), pair.now)
    (late,) = pair.events("a")
    assert late == ResponseReceived(ok, None, Peer(Transport.UDP, B_ADDR))


def test_ack_with_the_invite_branch_still_stops_2xx_retransmission() -> None:
    """Field quirk: some devices ACK a 2xx with the INVITE's branch. It still reaches the dialog."""
    pair = EndpointPair()
    invite = pair.request("INVITE")
    pair.send(invite)
    pair.transfer()
    event = received(pair)
    ok = pair.respond(event.request, 200)
    pair.transfer()
    bad_ack = build_request(
        "ACK", invite.uri, via=invite.top_via, from_=invite.from_, to=ok.to, call_id=invite.call_id,
        cseq=invite.cseq.number,
    )
    pair.send(bad_ack)
    pair.transfer()
    assert received(pair).key is None
    pair.run(10)
    assert labels(pair, "b") == ["100 INVITE", "200 INVITE"]
    finish(pair)


def test_stray_ack_surfaces_for_the_dialog_layer() -> None:
    pair = EndpointPair()
    ack = pair.request("ACK")
    pair.send(ack)
    pair.transfer()
    event = received(pair)
    assert event.key is None
    assert pair.b.transaction_count == 0
    assert labels(pair, "b") == []  # never answered


# --------------------------------------------------------------------------------------------------------
# CANCEL


def test_cancel_answered_200_and_the_tu_sends_487() -> None:
    pair = EndpointPair()
    invite = pair.request("INVITE")
    key = pair.send(invite)
    pair.transfer()
    event = received(pair)
    pair.respond(event.request, 180, to_tag="b-tag")
    pair.transfer()
    cancel_key = pair.a.cancel(key, pair.now)
    assert cancel_key == TransactionKey(server=False, method="CANCEL", branch=key.branch)
    pair.transfer()
    cancelled = pair.event_of("b", RequestCancelled)
    assert isinstance(cancelled, RequestCancelled)
    assert cancelled.invite_key == event.key
    assert cancelled.invite is event.request
    ok_cancel = [s.msg for s in pair.sent("b", "200 CANCEL")]
    assert len(ok_cancel) == 1
    assert isinstance(ok_cancel[0], SipResponse)
    assert ok_cancel[0].to.tag == "b-tag"  # §9.2: the INVITE's To tag
    pair.respond(event.request, 487, to_tag="b-tag")
    pair.transfer()
    statuses = [(r.response.status, r.response.cseq.method) for r in responses(pair)]
    assert statuses == [(100, "INVITE"), (180, "INVITE"), (200, "CANCEL"), (487, "INVITE")]
    assert labels(pair, "a") == ["INVITE", "CANCEL", "ACK"]
    finish(pair)


def test_cancel_in_calling_waits_for_the_first_provisional() -> None:
    pair = EndpointPair()
    key = pair.send(pair.request("INVITE"))
    assert pair.a.cancel(key, 0.0) is None  # nothing heard yet: the CANCEL must wait (§9.1)
    assert pair.a.cancel(key, 0.0) is None
    pair.collect()
    assert labels(pair, "a") == ["INVITE"]
    pair.transfer()  # INVITE → b; b's 100 → a, which now sends the CANCEL → b
    assert labels(pair, "a") == ["INVITE", "CANCEL"]
    event, cancelled = pair.events("b")
    assert isinstance(event, RequestReceived)
    assert cancelled == RequestCancelled(server_key(event.request), event.request)
    pair.respond(event.request, 487)
    pair.transfer()
    finish(pair)


def test_cancel_after_the_final_is_a_no_op() -> None:
    pair = EndpointPair()
    key = pair.send(pair.request("INVITE"))
    pair.transfer()
    pair.respond(received(pair).request, 200)
    pair.transfer()
    assert pair.a.cancel(key, pair.now) is None
    assert pair.a.cancel(TransactionKey(server=False, method="INVITE", branch="z9hG4bKgone"), 0) is None
    with pytest.raises(LocalProtocolError):
        pair.a.cancel(TransactionKey(server=False, method="MESSAGE", branch=key.branch), 0)
    finish(pair)


def test_cancel_for_an_unknown_transaction_gets_481() -> None:
    pair = EndpointPair()
    invite = pair.request("INVITE")
    cancel = build_request(
        "CANCEL", invite.uri, via=invite.top_via, from_=invite.from_, to=invite.to, call_id=invite.call_id,
        cseq=invite.cseq.number,
    )
    key = pair.send(cancel)
    pair.transfer()
    assert pair.events("b") == []
    assert labels(pair, "b") == ["481 CANCEL"]
    (resp,) = responses(pair)
    assert resp.key == key
    assert resp.response.reason == "Call/Transaction Does Not Exist"
    finish(pair)


def test_cancel_after_the_final_response_gets_200_but_no_event() -> None:
    """RFC 3261 §9.2: matched → 200; the TU hears nothing, the INVITE already has its final response."""
    pair = EndpointPair()
    key = pair.send(pair.request("INVITE"))
    pair.transfer()
    event = received(pair)
    pair.respond(event.request, 486)
    invite = event.request
    entry_state = pair.b.transaction_state(server_key(invite))
    assert entry_state is State.COMPLETED
    cancel = build_request(
        "CANCEL", invite.uri, via=invite.top_via, from_=invite.from_, to=invite.to, call_id=invite.call_id,
        cseq=invite.cseq.number,
    )
    pair.b.receive_datagram(bytes(cancel), UDP_A, pair.now)
    pair.collect()
    assert pair.events("b") == []
    assert labels(pair, "b")[-1] == "200 CANCEL"
    pair.transfer()
    finish(pair)
    assert key.method == "INVITE"


def test_cancel_retransmission_is_absorbed() -> None:
    pair = EndpointPair()
    key = pair.send(pair.request("INVITE"))
    pair.transfer()
    event = received(pair)
    pair.a.cancel(key, pair.now)
    pair.collect()
    pair.roundtrip("a")  # CANCEL → b, 200 → a
    pair.event_of("b", RequestCancelled)
    cancel = pair.sent("a", "CANCEL")[0].data
    pair.b.receive_datagram(cancel, UDP_A, pair.now)
    pair.collect()
    assert pair.events("b") == []  # RequestCancelled only once
    assert labels(pair, "b") == ["100 INVITE", "200 CANCEL", "200 CANCEL"]
    pair.respond(event.request, 487)
    pair.transfer()
    finish(pair)


def test_timer_c_cancels_an_unanswered_invite() -> None:
    pair = EndpointPair(config=EndpointConfig(timer_c=8.0))
    invite = pair.request("INVITE")
    key = pair.send(invite)
    pair.transfer()
    event = received(pair)
    pair.run(8.0)  # the guard fires; the CANCEL goes out by itself
    assert labels(pair, "a") == ["INVITE", "CANCEL"]
    assert pair.event_of("b", RequestCancelled)
    pair.respond(event.request, 487)
    pair.transfer()
    statuses = [r.response.status for r in responses(pair) if r.key == key]
    assert statuses == [100, 487]
    finish(pair)


def test_cancelled_invite_with_a_silent_peer_times_out() -> None:
    pair = EndpointPair()
    invite = pair.request("INVITE")
    key = pair.send(invite)
    pair.transfer()
    received(pair)
    pair.blackhole.add("b")
    pair.a.cancel(key, 1.0)
    pair.run(100)
    timeouts = [e for e in pair.events("a") if isinstance(e, TransactionTimedOut)]
    assert {(t.key.method, t.timer) for t in timeouts} == {("CANCEL", Timer.F), ("INVITE", Timer.B)}
    assert pair.a.transaction_count == 0


# --------------------------------------------------------------------------------------------------------
# Reliable transport


def test_tcp_no_retransmissions_and_zero_timers() -> None:
    pair = EndpointPair(Transport.TCP)
    req = pair.request("MESSAGE")
    pair.send(req)
    pair.transfer()
    event = received(pair)
    assert event.peer == Peer(Transport.TCP, A_ADDR, 1)
    assert pair.b.get_timer() is None  # non-INVITE server: no timer until it answers
    assert pair.a.get_timer() == 32.0  # Timer F only, no E
    pair.respond(event.request, 200)
    assert pair.b.transaction_count == 0  # Timer J = 0
    (sent,) = pair.sent("b")
    assert sent.dest == Peer(Transport.TCP, A_ADDR, 1)  # back over the same connection
    pair.transfer()
    assert pair.a.transaction_count == 0  # Timer K = 0
    assert labels(pair, "a") == ["MESSAGE"]


def test_tcp_invite_non_2xx() -> None:
    pair = EndpointPair(Transport.TCP)
    pair.send(pair.request("INVITE"))
    pair.transfer()
    event = received(pair)
    pair.respond(event.request, 486)
    assert event.key is not None
    assert pair.b.get_timer() == 32.0  # Timer H still guards the ACK; no Timer G
    pair.transfer()
    assert pair.a.transaction_count == 0  # Timer D = 0
    assert pair.b.transaction_count == 0  # Timer I = 0
    assert labels(pair, "a") == ["INVITE", "ACK"]
    assert labels(pair, "b") == ["100 INVITE", "486 INVITE"]


def test_tcp_invite_timeout_sends_once() -> None:
    pair = EndpointPair(Transport.TCP)
    pair.blackhole.add("b")
    pair.send(pair.request("INVITE"))
    pair.run(100)
    assert labels(pair, "a") == ["INVITE"]
    assert [type(e) for e in pair.events("a")] == [TransactionTimedOut]


def test_tcp_invite_2xx_accepted_without_retransmission() -> None:
    pair = EndpointPair(Transport.TCP)
    invite = pair.request("INVITE")
    pair.send(invite)
    pair.transfer()
    event = received(pair)
    pair.respond(event.request, 200)
    pair.transfer()
    ok = [r for r in responses(pair) if r.response.status == 200][0]
    pair.run(31)
    assert labels(pair, "b") == ["100 INVITE", "200 INVITE"]
    dialog = Dialog.from_uac(invite, ok.response)
    pair.send(dialog.create_ack(ok.response, pair.via("a")))
    pair.transfer()
    assert received(pair).key is None
    finish(pair)


# --------------------------------------------------------------------------------------------------------
# Via: received / rport (RFC 3581) and where responses go


def test_rport_and_received_are_stamped_and_used_behind_nat() -> None:
    public = ("203.0.113.5", 40000)
    pair = EndpointPair(a_public=public)
    pair.send(pair.request("REGISTER"))
    pair.transfer()
    event = received(pair)
    via = event.request.top_via
    assert via.received == "203.0.113.5"
    assert via.rport == 40000
    assert via.host == "10.0.0.1"  # sent-by kept
    assert event.peer == Peer(Transport.UDP, public)
    pair.respond(event.request, 200)
    (sent,) = pair.sent("b")
    assert sent.dest == Peer(Transport.UDP, public)
    resp = sent.msg
    assert resp.top_via.rport == 40000  # the stamped Via is echoed
    pair.transfer()
    assert [r.response.status for r in responses(pair)] == [200]
    assert pair.misrouted == []
    finish(pair)


def test_without_rport_the_response_goes_to_the_sent_by_port() -> None:
    """RFC 3261 §18.2.2: received host, sent-by port. Behind a NAT that loses the response."""
    pair = EndpointPair(a_public=("203.0.113.5", 40000), rport=False)
    pair.send(pair.request("MESSAGE"))
    pair.transfer()
    event = received(pair)
    assert event.request.top_via.received == "203.0.113.5"
    assert event.request.top_via.rport is None
    pair.respond(event.request, 200)
    pair.transfer()
    assert [m.dest.addr for m in pair.misrouted] == [("203.0.113.5", 5060)]


def test_force_rport_answers_the_source_port() -> None:
    pair = EndpointPair(a_public=("203.0.113.5", 40000), rport=False, b_config=EndpointConfig(force_rport=True))
    pair.send(pair.request("MESSAGE"))
    pair.transfer()
    event = received(pair)
    assert event.request.top_via.rport == 40000
    pair.respond(event.request, 200)
    pair.transfer()
    assert pair.misrouted == []
    assert [r.response.status for r in responses(pair)] == [200]
    finish(pair)


def test_same_host_no_rport_is_not_stamped() -> None:
    pair = EndpointPair(rport=False)
    req = pair.request("MESSAGE")
    pair.send(req)
    pair.transfer()
    event = received(pair)
    assert event.request == req  # nothing to add: the source is the sent-by
    pair.respond(event.request, 200)
    pair.transfer()
    finish(pair)


def test_stamping_keeps_further_vias_in_the_same_header() -> None:
    ep = SipEndpoint(EndpointConfig(), counter_tokens("x"))
    raw = wire_request(
        "OPTIONS sip:b@10.0.0.2 SIP/2.0\n"
        "v: SIP/2.0/UDP 192.168.1.9:5060;branch=z9hG4bKp1;rport, SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKorig\n"
        "f: <sip:a@x>;tag=1\nt: <sip:b@y>\ni: c1\nCSeq: 1 OPTIONS\nl: 0\n\n"
    )
    ep.receive_datagram(raw, Peer(Transport.UDP, ("198.51.100.7", 6000)), 0.0)
    event = ep.next_event()
    assert isinstance(event, RequestReceived)
    vias = event.request.vias
    assert str(vias[0]) == "SIP/2.0/UDP 192.168.1.9:5060;branch=z9hG4bKp1;rport=6000;received=198.51.100.7"
    assert str(vias[1]) == "SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKorig"
    ep.send_response(build_response(event.request, 200, to_tag="t"), 0.0)
    ((data, peer),) = ep.datagrams_to_send(0.0)
    assert peer == Peer(Transport.UDP, ("198.51.100.7", 6000))
    assert parse_message(data).headers.get_all("via") == [str(vias[0]), str(vias[1])]


# --------------------------------------------------------------------------------------------------------
# Malformed input


def _b() -> SipEndpoint:
    return SipEndpoint(EndpointConfig(), counter_tokens("b"))


def test_malformed_request_is_answered_400_with_recovered_headers() -> None:
    ep = _b()
    ep.receive_datagram(BAD_CSEQ, Peer(Transport.UDP, ("192.0.2.1", 5062)), 0.0)
    event = ep.next_event()
    assert event == MalformedReceived(Peer(Transport.UDP, ("192.0.2.1", 5062)), "bad CSeq: 'one MESSAGE'", True)
    ((data, peer),) = ep.datagrams_to_send(0.0)
    assert peer == Peer(Transport.UDP, ("192.0.2.1", 5062))  # rport honoured
    text = data.decode()
    assert text.startswith("SIP/2.0 400 Bad CSeq: 'one MESSAGE'\r\n")
    assert "Call-ID: broken-1\r\n" in text
    assert "CSeq: 0 MESSAGE\r\n" in text  # made parseable: number 0, the request-line method
    assert "Via: SIP/2.0/UDP 10.0.0.1:5060;rport=5062;branch=z9hG4bKbad1;received=192.0.2.1\r\n" in text
    assert "To: <sip:34020000002000000001@3402000000>;tag=b1\r\n" in text
    assert "From: <sip:34020000001320000001@3402000000>;tag=f1\r\n" in text
    assert text.endswith("Content-Length: 0\r\n\r\n")
    assert ep.transaction_count == 0
    resp = parse_message(data)  # the sender's parser must be able to read the answer
    assert isinstance(resp, SipResponse)
    assert client_key(resp) == TransactionKey(server=False, method="MESSAGE", branch="z9hG4bKbad1")


@pytest.mark.parametrize(
    ("cseq", "echoed"),
    [(b"CSeq: 12 MESSAGE x", b"CSeq: 12 MESSAGE\r\n"), (b"CSeq: 99999999999 MESSAGE", b"CSeq: 999999999 MESSAGE"),
     (b"CSeq: 7 INVITE", b"CSeq: 7 INVITE\r\n")],
)
def test_cseq_of_a_400_is_echoed_when_it_parses_else_rebuilt(cseq: bytes, echoed: bytes) -> None:
    ep = _b()
    ep.receive_datagram(BAD_CSEQ.replace(b"CSeq: one MESSAGE", cseq), UDP_A, 0.0)
    ((data, _),) = ep.datagrams_to_send(0.0)
    assert data.startswith(b"SIP/2.0 400 ")
    assert echoed in data


@pytest.mark.parametrize(
    ("mutation", "reason"),
    [
        ((b"CSeq: one MESSAGE", b"CSeq: 1 INVITE"), "400 CSeq method does not match request method"),
        ((b"CSeq: one MESSAGE\r\nContent-Length: 0", b"CSeq: 1 MESSAGE\r\nContent-Length: 99"),
         "400 Content-Length exceeds body"),
        ((b"CSeq: one MESSAGE", b"CSeq: 1 MESSAGE\r\nBad Header Line"),
         "400 Bad header line: 'Bad Header Line'"),
        ((b"SIP/2.0\r\nVia", b"SIP/3.0\r\nVia"), "400 Unsupported SIP version: SIP/3.0"),
    ],
)
def test_malformed_reason_phrases(mutation: tuple[bytes, bytes], reason: str) -> None:
    ep = _b()
    ep.receive_datagram(BAD_CSEQ.replace(*mutation), UDP_A, 0.0)
    ((data, _),) = ep.datagrams_to_send(0.0)
    assert data.startswith(f"SIP/2.0 {reason}\r\n".encode())
    event = ep.next_event()
    assert isinstance(event, MalformedReceived) and event.answered


def test_reason_phrase_is_sanitised_to_one_printable_line() -> None:
    ep = _b()
    ep.receive_datagram(BAD_CSEQ.replace(b"CSeq: one", "CSeq: \x7f\u00e9\t\tone".encode()), UDP_A, 0.0)
    ((data, _),) = ep.datagrams_to_send(0.0)
    status_line = data.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"SIP/2.0 400 Bad CSeq: ")
    assert all(32 <= c < 127 for c in status_line)
    assert b"  " not in status_line


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01garbage",
        b"hello world\r\n\r\n",
        BAD_CSEQ.replace(b"Call-ID: broken-1\r\n", b""),  # nothing to echo
        BAD_CSEQ.replace(b"Via: SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bKbad1\r\n", b""),
        BAD_CSEQ.replace(b"Via: SIP/2.0/UDP 10.0.0.1:5060", b"Via: SIP/2.0/UDP <nope>"),
        BAD_CSEQ.replace(b"CSeq: one MESSAGE\r\n", b""),
        BAD_CSEQ.replace(b"MESSAGE sip:", b"ACK sip:").replace(b"one MESSAGE", b"1 ACK x"),  # ACK: no answer
        b"SIP/2.0 200 OK\r\nCSeq: x\r\n\r\n",  # a broken response
        b"SIP/2.0 200 OK\r\n",
        b"MESSAGE\r\n\r\n",
    ],
)
def test_unrecoverable_datagrams_are_dropped(data: bytes) -> None:
    ep = _b()
    ep.receive_datagram(data, UDP_A, 0.0)
    event = ep.next_event()
    assert isinstance(event, MalformedReceived)
    assert not event.answered
    assert ep.datagrams_to_send(0.0) == []
    assert ep.next_event() is None


def test_message_too_large_is_answered_513() -> None:
    ep = SipEndpoint(EndpointConfig(max_message_size=1024), counter_tokens("b"))
    big = BAD_CSEQ.replace(b"one MESSAGE", b"1 MESSAGE").replace(b"Content-Length: 0", b"Content-Length: 2000")
    ep.receive_datagram(big + b"x" * 2000, UDP_A, 0.0)
    ((data, peer),) = ep.datagrams_to_send(0.0)
    assert data.startswith(b"SIP/2.0 513 Message Too Large\r\n")
    assert peer == UDP_A
    event = ep.next_event()
    assert event == MalformedReceived(UDP_A, f"message of {len(big) + 2000} bytes exceeds 1024", True)


def test_keepalive_crlf_is_ignored() -> None:
    ep = _b()
    ep.receive_datagram(b"\r\n\r\n", UDP_A, 0.0)
    ep.receive_datagram(b"\r\n", UDP_A, 0.0)
    assert ep.next_event() is None
    assert ep.datagrams_to_send(0.0) == []


def test_parsed_request_with_broken_from_is_answered_400() -> None:
    ep = _b()
    req = parse_message(BAD_CSEQ.replace(b"one MESSAGE", b"1 MESSAGE"))
    assert isinstance(req, SipRequest)
    broken = req.with_headers(req.headers.set("From", "<sip:unterminated"))
    ep.receive_message(broken, Peer(Transport.TCP, A_ADDR, 9), 0.0)
    event = ep.next_event()
    assert isinstance(event, MalformedReceived) and event.answered
    assert "unterminated" in event.reason
    ((data, peer),) = ep.datagrams_to_send(0.0)
    assert peer == Peer(Transport.TCP, A_ADDR, 9)
    assert data.startswith(b"SIP/2.0 400 Unterminated <URI> in '<sip:unterminated'\r\n")
    assert ep.transaction_count == 0


def test_tcp_frame_with_bad_header_goes_through_receive_datagram() -> None:
    """The adapter hands TCP frames (``StreamParser.feed_frames``) to ``receive_datagram`` with a TCP peer."""
    ep = _b()
    tcp = Peer(Transport.TCP, ("192.0.2.1", 40000), 3)
    ep.receive_datagram(BAD_CSEQ, tcp, 0.0)
    ((data, peer),) = ep.datagrams_to_send(0.0)
    assert peer == tcp
    assert data.startswith(b"SIP/2.0 400 ")


def test_stray_response_is_counted_not_passed() -> None:
    ep = _b()
    req = build_request(
        "MESSAGE", "sip:x@y", via=Via("UDP", "10.0.0.2", 5060, (("branch", "z9hG4bKnotours"),)),
        from_=NameAddr.parse("<sip:b@y>;tag=1"), to=NameAddr.parse("<sip:x@y>"), call_id="c", cseq=1,
    )
    resp = build_response(req, 200, to_tag="2")
    ep.receive_datagram(bytes(resp), UDP_A, 0.0)
    assert ep.next_event() == StrayResponse(resp, UDP_A)
    invite_488 = build_response(req.with_headers(req.headers.set("CSeq", "1 INVITE")), 488, to_tag="2")
    ep.receive_message(invite_488, UDP_A, 0.0)
    assert isinstance(ep.next_event(), StrayResponse)


# --------------------------------------------------------------------------------------------------------
# Overload


def test_overload_answers_503_with_retry_after() -> None:
    pair = EndpointPair(b_config=EndpointConfig(max_transactions=2, retry_after=7))
    first = pair.request("MESSAGE")
    second = pair.request("INVITE")
    third = pair.request("REGISTER")
    for req in (first, second, third):
        pair.send(req)
    pair.transfer()
    b_events = pair.events("b")
    assert [type(e) for e in b_events] == [RequestReceived, RequestReceived, Overloaded]
    assert b_events[2] == Overloaded(UDP_A, "REGISTER")
    assert pair.b.transaction_count == 2
    (busy,) = [s.msg for s in pair.sent("b", "503 REGISTER")]
    assert isinstance(busy, SipResponse)
    assert busy.headers.get("retry-after") == "7"
    assert busy.to.tag is not None
    # retransmissions of live transactions are still absorbed, an ACK still passes, a CANCEL is answered
    pair.b.receive_datagram(bytes(first), UDP_A, pair.now)
    assert pair.events("b") == []
    pair.send(pair.request("ACK"))
    pair.transfer()
    assert isinstance(received(pair), RequestReceived)
    invite_key = [e for e in b_events if isinstance(e, RequestReceived)][1].key
    assert invite_key is not None
    assert pair.a.cancel(client_key(second), pair.now) is not None
    pair.transfer()
    assert pair.event_of("b", RequestCancelled)
    # the third request's transaction on a saw the 503 as its final
    a_finals = [r.response.status for r in responses(pair) if r.response.cseq.method == "REGISTER"]
    assert a_finals == [503]
    b_first, b_second = [e for e in b_events if isinstance(e, RequestReceived)]
    pair.respond(b_first.request, 200)
    pair.respond(b_second.request, 487)
    pair.transfer()
    finish(pair)


# --------------------------------------------------------------------------------------------------------
# RFC 2543 peers (no magic cookie)


def _legacy_invite(branch: str | None = None) -> SipRequest:
    params: tuple[tuple[str, str | None], ...] = (("branch", branch),) if branch else ()
    return build_request(
        "INVITE", "sip:b@10.0.0.2", via=Via("UDP", "10.0.0.1", 5060, params),
        from_=NameAddr.parse("<sip:a@10.0.0.1>;tag=old"), to=NameAddr.parse("<sip:b@10.0.0.2>"),
        call_id="legacy-1", cseq=3,
    )


@pytest.mark.parametrize("branch", [None, "1234"])
def test_rfc2543_matching_absorbs_retransmissions_and_acks(branch: str | None) -> None:
    ep = _b()
    invite = _legacy_invite(branch)
    ep.receive_datagram(bytes(invite), UDP_A, 0.0)
    event = ep.next_event()
    assert isinstance(event, RequestReceived) and event.key is not None
    assert event.key.legacy == ("legacy-1", "old", "3")
    ep.receive_datagram(bytes(invite), UDP_A, 0.2)  # retransmission
    assert ep.next_event() is None
    busy = build_response(event.request, 486, to_tag="new")
    ep.send_response(busy, 0.3)
    ack = build_request(
        "ACK", invite.uri, via=invite.top_via, from_=invite.from_, to=busy.to, call_id="legacy-1", cseq=3,
    )
    ep.receive_datagram(bytes(ack), UDP_A, 0.4)
    assert ep.next_event() is None  # matched the INVITE transaction: absorbed
    assert ep.transaction_state(event.key) is State.CONFIRMED
    ep.handle_timer(10.0)
    assert ep.transaction_count == 0


def test_send_response_matches_its_transaction_by_via_and_cseq_method() -> None:
    ep = _b()
    invite = _legacy_invite("z9hG4bKm1")
    ep.receive_datagram(bytes(invite), UDP_A, 0.0)
    event = ep.next_event()
    assert isinstance(event, RequestReceived)
    with pytest.raises(LocalProtocolError, match="no server transaction for 200 BYE"):
        ep.send_response(
            build_response(event.request.with_headers(event.request.headers.set("CSeq", "3 BYE")), 200), 0.0
        )
    other = build_response(event.request, 200, to_tag="t").with_headers(
        build_response(event.request, 200, to_tag="t").headers.set("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx")
    )
    with pytest.raises(LocalProtocolError, match="no server transaction"):
        ep.send_response(other, 0.0)
    with pytest.raises(LocalProtocolError, match="unusable response: missing Via header"):
        ep.send_response(SipResponse(200, "OK", Headers.of(("CSeq", "1 INVITE"))), 0.0)


# --------------------------------------------------------------------------------------------------------
# API misuse and helpers


def test_send_request_requires_a_magic_cookie_branch() -> None:
    pair = EndpointPair()
    req = pair.request("MESSAGE")
    bad = req.with_headers(req.headers.set("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=1234"))
    with pytest.raises(LocalProtocolError, match="lacks the z9hG4bK magic cookie"):
        pair.a.send_request(bad, UDP_A, 0.0)
    with pytest.raises(LocalProtocolError, match="unusable request: missing Via header"):
        pair.a.send_request(req.with_headers(req.headers.remove("Via")), UDP_A, 0.0)


def test_send_request_rejects_a_duplicate_branch() -> None:
    pair = EndpointPair()
    req = pair.request("MESSAGE")
    pair.send(req)
    with pytest.raises(LocalProtocolError, match="exists"):
        pair.send(req)


def test_send_request_rejects_a_cseq_method_mismatch() -> None:
    pair = EndpointPair()
    req = pair.request("MESSAGE")
    with pytest.raises(LocalProtocolError, match="CSeq method"):
        pair.a.send_request(req.with_headers(req.headers.set("CSeq", "1 INFO")), UDP_A, 0.0)


def test_send_stateless() -> None:
    ep = _b()
    req = _legacy_invite("z9hG4bKs")
    resp = build_response(req, 481, to_tag="x")
    ep.send_stateless(resp, UDP_A)
    assert ep.datagrams_to_send(0.0) == [(bytes(resp), UDP_A)]
    assert ep.datagrams_to_send(0.0) == []
    assert ep.transaction_count == 0


def test_identifier_helpers_use_the_injected_factory() -> None:
    tokens = iter(["t1", "t2", "t3"])
    ep = SipEndpoint(EndpointConfig(), lambda: next(tokens))
    assert ep.new_branch() == "z9hG4bKt1"
    assert ep.new_call_id() == "t2"
    assert ep.new_tag() == "t3"


@pytest.mark.parametrize(
    "kwargs", [{"t1": 0.0}, {"max_transactions": 0}, {"max_message_size": 10}, {"retry_after": -1}]
)
def test_endpoint_config_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        EndpointConfig(**kwargs)


def test_transaction_state_of_unknown_keys() -> None:
    ep = _b()
    assert ep.transaction_state(TransactionKey(server=True, method="INVITE", branch="z9hG4bKno")) is None
    assert ep.transaction_state(TransactionKey(server=False, method="INVITE", branch="z9hG4bKno")) is None


# --------------------------------------------------------------------------------------------------------
# The timer heap at scale


def test_get_timer_is_the_earliest_deadline_among_many() -> None:
    ep = SipEndpoint(EndpointConfig(), counter_tokens("x"))
    pair = EndpointPair()
    peer = Peer(Transport.UDP, B_ADDR)
    for i in range(500):
        req = pair.request("MESSAGE")
        ep.send_request(req, peer, now=i * 0.01)
    assert ep.transaction_count == 500
    assert ep.get_timer() == 0.5  # the first transaction's Timer E
    ep.handle_timer(0.5)
    assert ep.get_timer() == pytest.approx(0.51)
    ep.datagrams_to_send(0.5)
    ep.handle_timer(200)
    assert ep.transaction_count == 0
    assert ep.get_timer() is None
    assert len(ep._heap) == 0


def test_heap_stays_bounded_under_churn() -> None:
    """Deadlines that move before they fire leave stale heap entries (lazy deletion): each INVITE here leaves
    its Timer C entry (180 s out) behind when the 2xx arrives. Compaction keeps the heap within 4x the
    live transactions."""
    ep = SipEndpoint(EndpointConfig(), counter_tokens("a"))
    peer = Peer(Transport.UDP, B_ADDR)
    worst = 0
    for n in range(3000):
        now = n * 0.05
        req = build_request(
            "INVITE", "sip:b@10.0.0.2", via=Via("UDP", "10.0.0.1", 5060, (("branch", ep.new_branch()),)),
            from_=NameAddr.parse("<sip:a@x>;tag=1"), to=NameAddr.parse("<sip:b@y>"), call_id=f"c{n}", cseq=1,
        )
        ep.send_request(req, peer, now)
        ep.receive_message(build_response(req, 180, to_tag="t"), peer, now)  # A, B stale; C restarted
        ep.receive_message(build_response(req, 200, to_tag="t"), peer, now)  # C stale; M armed
        ep.handle_timer(now)
        worst = max(worst, len(ep._heap) - max(64, 4 * ep.transaction_count))
        while ep.next_event() is not None:
            pass
        ep.datagrams_to_send(now)
    assert ep.transaction_count == 640  # 32 s of Accepted at 20 INVITEs per second
    # Without compaction all 3000 Timer C entries (due at 180 s and later) would still be queued.
    assert worst <= 8  # a few per transaction that terminated since the last push
    assert len(ep._heap) <= 4 * 640 + 64 + 8
    ep.handle_timer(1000)
    assert ep.transaction_count == 0
    assert ep.get_timer() is None
    assert ep._heap == []


def test_ten_thousand_transactions_all_drain() -> None:
    ep = SipEndpoint(EndpointConfig(), counter_tokens("x"))
    tokens = itertools.count()
    peer = Peer(Transport.UDP, B_ADDR)
    for i in range(10_000):
        req = build_request(
            "MESSAGE", "sip:b@10.0.0.2", via=Via("UDP", "10.0.0.1", 5060, (("branch", f"z9hG4bK{next(tokens)}"),)),
            from_=NameAddr.parse("<sip:a@x>;tag=1"), to=NameAddr.parse("<sip:b@y>"), call_id=f"c{i}", cseq=1,
        )
        ep.send_request(req, peer, now=0.0)
    assert ep.get_timer() == 0.5
    now = 0.0
    rounds = 0
    while (deadline := ep.get_timer()) is not None:
        now = deadline
        ep.handle_timer(now)
        ep.datagrams_to_send(now)
        rounds += 1
    assert now == 32.0
    assert rounds == 11  # ten Timer E instants, then Timer F, shared by all
    assert ep.transaction_count == 0
    timeouts = 0
    while (event := ep.next_event()) is not None:
        assert isinstance(event, TransactionTimedOut)
        timeouts += 1
    assert timeouts == 10_000


def test_everything_in_one_session_leaves_nothing_behind() -> None:
    pair = EndpointPair()
    requests = [pair.request(m) for m in ("REGISTER", "MESSAGE", "INVITE", "INVITE", "SUBSCRIBE")]
    keys = [pair.send(req) for req in requests]
    pair.drop("a", 2)
    pair.run(0.5)
    events = [e for e in pair.events("b") if isinstance(e, RequestReceived)]
    assert sorted(e.request.cseq.number for e in events) == [r.cseq.number for r in requests]
    assert pair.a.cancel(keys[3], pair.now) is not None
    pair.transfer()
    for event in events:
        cancelled = event.request.call_id == requests[3].call_id
        pair.respond(event.request, 487 if cancelled else 200)
    pair.transfer()
    finals = {
        r.response.call_id: r.response.status
        for r in responses(pair)
        if r.response.status >= 200 and r.response.cseq.method != "CANCEL"
    }
    assert finals[requests[3].call_id] == 487
    assert finals[requests[0].call_id] == 200
    finish(pair)
    assert pair.misrouted == []


@pytest.mark.parametrize("seed", range(4))
def test_random_traffic_timers_never_lag_and_everything_ends(seed: int) -> None:
    """Random client traffic and late ``handle_timer`` calls: nothing due is ever left behind, and with every
    peer gone silent all transactions end (the Timer C guard even ends INVITEs stuck in Proceeding)."""
    rnd = random.Random(seed)
    ep = SipEndpoint(EndpointConfig(), counter_tokens("x"))
    peer = Peer(Transport.UDP, B_ADDR)
    now = 0.0
    sent: list[SipRequest] = []
    for _ in range(1500):
        now += rnd.random() * 0.05
        roll = rnd.random()
        if roll < 0.4:
            req = build_request(
                rnd.choice(["INVITE", "MESSAGE"]), "sip:b@10.0.0.2",
                via=Via("UDP", "10.0.0.1", 5060, (("branch", ep.new_branch()),)),
                from_=NameAddr.parse("<sip:a@x>;tag=1"), to=NameAddr.parse("<sip:b@y>"),
                call_id=ep.new_call_id(), cseq=1,
            )
            ep.send_request(req, peer, now)
            sent.append(req)
        elif roll < 0.8 and sent:
            status = rnd.choice([100, 180, 183, 200, 486])
            ep.receive_message(build_response(rnd.choice(sent), status, to_tag="t"), peer, now)
        elif roll < 0.85:
            now += rnd.random() * 40
            ep.handle_timer(now)
            deadline = ep.get_timer()
            assert deadline is None or deadline > now
        while ep.next_event() is not None:
            pass
        ep.datagrams_to_send(now)
    while (deadline := ep.get_timer()) is not None:
        ep.handle_timer(deadline)
    assert ep.transaction_count == 0
    assert ep._heap == []
