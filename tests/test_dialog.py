"""sip.dialog: UAC and UAS dialogs (RFC 3261 §12), in-dialog request shape, 2xx ACK, and a whole GB28181-style
live-stream call (INVITE, 200, ACK, BYE) between two endpoints in virtual time."""

from __future__ import annotations

import pytest
from sip_pair import EndpointPair

from sip.dialog import CSeqOutOfOrder, Dialog, DialogId, DialogState
from sip.endpoint import RequestReceived, ResponseReceived, TransactionTimedOut
from sip.errors import CallDoesNotExist, LocalProtocolError, RemoteProtocolError
from sip.message import (
    NameAddr,
    SipRequest,
    SipResponse,
    Via,
    build_request,
    build_response,
    parse_message,
)

PLATFORM = "34020000002000000001"
CAMERA = "34020000001320000001"
CHANNEL = "34020000001310000001"
SDP = b"v=0\r\no=34020000002000000001 0 0 IN IP4 10.0.0.1\r\ns=Play\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"

UAC_VIA = Via("UDP", "10.0.0.1", 5060, (("branch", "z9hG4bKinvite1"), ("rport", None)))


def invite(record_route: tuple[str, ...] = (), contact: str | None = f"<sip:{PLATFORM}@10.0.0.1:5060>") -> SipRequest:
    headers = [("Record-Route", r) for r in record_route]
    if contact:
        headers.append(("Contact", contact))
    headers.append(("Subject", f"{CHANNEL}:0100000001,{PLATFORM}:0"))
    return build_request(
        "INVITE",
        f"sip:{CHANNEL}@3402000000",
        via=UAC_VIA,
        from_=NameAddr.parse(f"<sip:{PLATFORM}@3402000000>;tag=plat1"),
        to=NameAddr.parse(f"<sip:{CHANNEL}@3402000000>"),
        call_id="call-42",
        cseq=20,
        headers=headers,
        body=SDP,
        content_type="application/sdp",
    )


def ok(request: SipRequest, record_route: tuple[str, ...] = (),
       contact: str | None = f"<sip:{CAMERA}@10.0.0.2:5062;transport=udp>", status: int = 200) -> SipResponse:
    headers = [("Record-Route", r) for r in record_route]
    if contact:
        headers.append(("Contact", contact))
    return build_response(request, status, to_tag="cam7", headers=headers)


def new_via(branch: str = "z9hG4bKnext") -> Via:
    return Via("UDP", "10.0.0.1", 5060, (("branch", branch),))


# --------------------------------------------------------------------------------------------------------
# UAC


def test_from_uac_fields() -> None:
    inv = invite()
    dialog = Dialog.from_uac(inv, ok(inv))
    assert dialog.id == DialogId("call-42", "plat1", "cam7")
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.local_uri == f"sip:{PLATFORM}@3402000000"
    assert dialog.remote_uri == f"sip:{CHANNEL}@3402000000"
    assert dialog.remote_target == f"sip:{CAMERA}@10.0.0.2:5062;transport=udp"
    assert dialog.route_set == ()
    assert dialog.local_cseq == 20
    assert dialog.remote_cseq is None
    assert repr(dialog) == "<Dialog call-42 plat1/cam7 CONFIRMED>"


def test_from_uac_route_set_is_reversed_record_route() -> None:
    inv = invite()
    resp = ok(inv, record_route=("<sip:p2.example;lr>", "<sip:p1.example;lr>"))
    dialog = Dialog.from_uac(inv, resp)
    assert dialog.route_set == ("<sip:p1.example;lr>", "<sip:p2.example;lr>")


def test_from_uac_record_route_in_one_header_is_split() -> None:
    inv = invite()
    resp = ok(inv, record_route=("<sip:p2.example;lr>, <sip:p1.example;lr>",))
    assert Dialog.from_uac(inv, resp).route_set == ("<sip:p1.example;lr>", "<sip:p2.example;lr>")


def test_from_uac_early_then_confirmed() -> None:
    inv = invite()
    ringing = ok(inv, status=183, record_route=("<sip:early;lr>",))
    dialog = Dialog.from_uac(inv, ringing)
    assert dialog.state is DialogState.EARLY
    final = ok(inv, record_route=("<sip:final;lr>",), contact="<sip:cam@10.0.0.9>")
    dialog.confirm(final)
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.route_set == ("<sip:final;lr>",)  # recomputed from the 2xx (§13.2.2.4)
    assert dialog.remote_target == "sip:cam@10.0.0.9"
    dialog.confirm(ok(inv, contact="<sip:cam@10.0.0.10>"))  # a retransmitted 2xx: no further change
    assert dialog.remote_target == "sip:cam@10.0.0.9"


def test_confirm_rejects_other_dialogs_and_non_2xx() -> None:
    inv = invite()
    dialog = Dialog.from_uac(inv, ok(inv, status=180))
    with pytest.raises(LocalProtocolError):
        dialog.confirm(ok(inv, status=180))
    other = build_response(inv, 200, to_tag="someone-else")
    with pytest.raises(LocalProtocolError):
        dialog.confirm(other)


def test_from_uac_needs_a_to_tag_and_a_dialog_creating_status() -> None:
    inv = invite()
    with pytest.raises(RemoteProtocolError, match="without a To tag"):
        Dialog.from_uac(inv, build_response(inv, 200))
    with pytest.raises(LocalProtocolError):
        Dialog.from_uac(inv, ok(inv, status=100))
    with pytest.raises(LocalProtocolError):
        Dialog.from_uac(inv, ok(inv, status=486))


def test_missing_contact_falls_back_to_the_remote_uri() -> None:
    inv = invite()
    dialog = Dialog.from_uac(inv, ok(inv, contact=None))
    assert dialog.remote_target == f"sip:{CHANNEL}@3402000000"


def test_bye_request_shape_uac() -> None:
    inv = invite()
    dialog = Dialog.from_uac(inv, ok(inv, record_route=("<sip:p2;lr>", "<sip:p1;lr>")))
    bye = dialog.create_request("BYE", new_via("z9hG4bKbye1"))
    assert bye.method == "BYE"
    assert bye.uri == f"sip:{CAMERA}@10.0.0.2:5062;transport=udp"  # the remote target
    assert bye.headers.get_all("route") == ["<sip:p1;lr>", "<sip:p2;lr>"]
    assert (bye.cseq.number, bye.cseq.method) == (21, "BYE")
    assert bye.call_id == "call-42"
    assert bye.from_.tag == "plat1"
    assert bye.to.tag == "cam7"
    assert bye.from_.uri == inv.from_.uri
    assert bye.top_via.branch == "z9hG4bKbye1"
    assert bye.headers.get("max-forwards") == "70"
    assert bye.body == b""
    # round trip through the wire
    assert parse_message(bytes(bye)) == bye
    info = dialog.create_request(
        "INFO", new_via("z9hG4bKinfo"), body=b"PLAY RTSP/1.0\r\nCSeq: 2\r\nScale: 2.0\r\n",
        content_type="Application/MANSRTSP",
    )
    assert info.cseq.number == 22
    assert info.content_type == "application/mansrtsp"
    assert dialog.local_cseq == 22


def test_extra_headers_follow_the_route_headers() -> None:
    inv = invite()
    dialog = Dialog.from_uac(inv, ok(inv, record_route=("<sip:p1;lr>",)))
    msg = dialog.create_request("MESSAGE", new_via(), headers=[("Contact", "<sip:me@10.0.0.1>")])
    names = [n for n, _ in msg.headers.items]
    assert names.index("Route") < names.index("Contact")


def test_strict_router_becomes_the_request_uri() -> None:
    inv = invite()
    dialog = Dialog.from_uac(inv, ok(inv, record_route=("<sip:p2>", "<sip:p1>")))
    bye = dialog.create_request("BYE", new_via())
    assert bye.uri == "sip:p1"
    assert bye.headers.get_all("route") == ["<sip:p2>", f"<sip:{CAMERA}@10.0.0.2:5062;transport=udp>"]


def test_create_ack_for_2xx() -> None:
    inv = invite()
    resp = ok(inv, record_route=("<sip:p1;lr>",))
    dialog = Dialog.from_uac(inv, resp)
    dialog.create_request("INFO", new_via("z9hG4bKi"))  # CSeq 21: the ACK still uses the INVITE's 20
    ack = dialog.create_ack(resp, new_via("z9hG4bKack1"))
    assert ack.method == "ACK"
    assert (ack.cseq.number, ack.cseq.method) == (20, "ACK")
    assert ack.top_via.branch == "z9hG4bKack1"  # a new branch, unlike a non-2xx ACK
    assert ack.top_via.branch != inv.top_via.branch
    assert ack.uri == dialog.remote_target
    assert ack.headers.get_all("route") == ["<sip:p1;lr>"]
    assert ack.to.tag == "cam7" and ack.from_.tag == "plat1"
    assert dialog.local_cseq == 21  # unchanged by the ACK
    with pytest.raises(LocalProtocolError):
        dialog.create_ack(ok(inv, status=180), new_via())


def test_create_request_refuses_ack_cancel_and_terminated() -> None:
    inv = invite()
    dialog = Dialog.from_uac(inv, ok(inv))
    for method in ("ACK", "CANCEL", "ack"):
        with pytest.raises(LocalProtocolError):
            dialog.create_request(method, new_via())
    dialog.terminate()
    assert dialog.state is DialogState.TERMINATED
    with pytest.raises(LocalProtocolError, match="terminated"):
        dialog.create_request("BYE", new_via())


# --------------------------------------------------------------------------------------------------------
# UAS


def test_from_uas_fields_and_bye() -> None:
    inv = invite(record_route=("<sip:p1;lr>", "<sip:p2;lr>"))
    resp = ok(inv)
    dialog = Dialog.from_uas(inv, resp)
    assert dialog.id == DialogId("call-42", "cam7", "plat1")
    assert dialog.local_uri == f"sip:{CHANNEL}@3402000000"
    assert dialog.remote_uri == f"sip:{PLATFORM}@3402000000"
    assert dialog.remote_target == f"sip:{PLATFORM}@10.0.0.1:5060"
    assert dialog.route_set == ("<sip:p1;lr>", "<sip:p2;lr>")  # request order, not reversed
    assert dialog.remote_cseq == 20
    bye = dialog.create_request("BYE", Via("UDP", "10.0.0.2", 5062, (("branch", "z9hG4bKcb"),)))
    assert bye.uri == f"sip:{PLATFORM}@10.0.0.1:5060"
    assert bye.headers.get_all("route") == ["<sip:p1;lr>", "<sip:p2;lr>"]
    assert bye.cseq.number == 1  # our own CSeq space starts fresh
    assert bye.from_.tag == "cam7" and bye.to.tag == "plat1"
    assert bye.call_id == "call-42"


def test_from_uas_with_chosen_cseq_base() -> None:
    inv = invite()
    dialog = Dialog.from_uas(inv, ok(inv), local_cseq=100)
    assert dialog.create_request("NOTIFY", new_via()).cseq.number == 101


def test_from_uas_needs_our_tag() -> None:
    inv = invite()
    with pytest.raises(LocalProtocolError, match="local tag"):
        Dialog.from_uas(inv, build_response(inv, 200))


def test_remote_without_from_tag_rfc2543() -> None:
    inv = invite()
    old = inv.with_headers(inv.headers.set("From", f"<sip:{PLATFORM}@3402000000>"))
    dialog = Dialog.from_uas(old, ok(old))
    assert dialog.remote_tag == ""
    bye = build_request(
        "BYE", "sip:x@y", via=new_via(), from_=old.from_, to=ok(old).to, call_id="call-42", cseq=21,
    )
    assert dialog.matches(bye)


# --------------------------------------------------------------------------------------------------------
# Matching and incoming in-dialog requests


def _peer_request(dialog: Dialog, method: str, cseq: int, contact: str | None = None) -> SipRequest:
    """A request the *peer* sends in ``dialog`` (From = its remote side, To = our local side)."""
    headers = [("Contact", contact)] if contact else []
    return build_request(
        method, dialog.local_uri, via=Via("UDP", "10.0.0.2", 5062, (("branch", f"z9hG4bKp{cseq}"),)),
        from_=dialog.remote, to=dialog.local, call_id=dialog.call_id, cseq=cseq, headers=headers,
    )


def test_matches_requests_from_the_peer_and_responses_to_us() -> None:
    inv = invite()
    resp = ok(inv)
    uac = Dialog.from_uac(inv, resp)
    assert uac.matches(resp)
    assert uac.matches(_peer_request(uac, "BYE", 1))
    bye = uac.create_request("BYE", new_via())
    assert not uac.matches(bye)  # our own request: tags the other way round
    assert uac.matches(build_response(bye, 200))
    assert not uac.matches(build_response(inv, 200, to_tag="other"))
    wrong_call = _peer_request(uac, "BYE", 2)
    assert not uac.matches(wrong_call.with_headers(wrong_call.headers.set("Call-ID", "x")))
    broken = wrong_call.with_headers(wrong_call.headers.set("To", "<sip:broken"))
    assert not uac.matches(broken)
    uas = Dialog.from_uas(inv, resp)
    assert uas.matches(bye)  # the UAC's BYE belongs to the UAS's dialog


def test_receive_request_updates_remote_cseq_and_rejects_out_of_order() -> None:
    inv = invite()
    dialog = Dialog.from_uac(inv, ok(inv))
    dialog.receive_request(_peer_request(dialog, "INFO", 5))
    assert dialog.remote_cseq == 5
    dialog.receive_request(_peer_request(dialog, "BYE", 6))
    assert dialog.remote_cseq == 6
    with pytest.raises(CSeqOutOfOrder) as info:
        dialog.receive_request(_peer_request(dialog, "INFO", 4))
    assert info.value.status == 500
    dialog.receive_request(_peer_request(dialog, "ACK", 1))  # ACK/CANCEL carry the INVITE's CSeq
    assert dialog.remote_cseq == 6


def test_receive_request_not_ours_is_481() -> None:
    inv = invite()
    dialog = Dialog.from_uac(inv, ok(inv))
    stranger = _peer_request(dialog, "BYE", 9)
    stranger = stranger.with_headers(stranger.headers.set("From", "<sip:x@y>;tag=zzz"))
    with pytest.raises(CallDoesNotExist) as info:
        dialog.receive_request(stranger)
    assert info.value.status == 481
    dialog.terminate()
    with pytest.raises(CallDoesNotExist):
        dialog.receive_request(_peer_request(dialog, "BYE", 9))


def test_target_refresh() -> None:
    inv = invite()
    dialog = Dialog.from_uas(inv, ok(inv))
    dialog.receive_request(_peer_request(dialog, "INVITE", 21, contact="<sip:plat@10.9.9.9:5070>"))
    assert dialog.remote_target == "sip:plat@10.9.9.9:5070"
    dialog.receive_request(_peer_request(dialog, "INFO", 22, contact="<sip:ignored@1.1.1.1>"))
    assert dialog.remote_target == "sip:plat@10.9.9.9:5070"  # INFO is not a target refresh
    dialog.receive_request(_peer_request(dialog, "NOTIFY", 23))  # no Contact: kept
    assert dialog.remote_target == "sip:plat@10.9.9.9:5070"


# --------------------------------------------------------------------------------------------------------
# A whole call through two endpoints


def test_live_stream_call_invite_ack_bye() -> None:
    pair = EndpointPair()
    inv = pair.request("INVITE", body=SDP, content_type="application/sdp")
    invite_key = pair.send(inv)
    pair.transfer()
    (incoming,) = [e for e in pair.events("b") if isinstance(e, RequestReceived)]
    # b (the camera) answers with SDP and becomes a UAS dialog
    answer = pair.respond(
        incoming.request, 200, to_tag="cam-tag", body=SDP, content_type="application/sdp",
        headers=[("Contact", "<sip:b@10.0.0.2:5060>")],
    )
    uas = Dialog.from_uas(incoming.request, answer)
    pair.transfer()
    finals = [e for e in pair.events("a") if isinstance(e, ResponseReceived) and e.response.status == 200]
    assert [f.key for f in finals] == [invite_key]
    uac = Dialog.from_uac(inv, finals[0].response)
    assert uac.id == DialogId(uas.call_id, uas.remote_tag, uas.local_tag)
    pair.send(uac.create_ack(finals[0].response, pair.via("a")))
    pair.transfer()
    (ack,) = pair.events("b")
    assert isinstance(ack, RequestReceived) and ack.key is None
    assert uas.matches(ack.request)
    uas.receive_request(ack.request)
    # ... media flows; the platform hangs up
    pair.run(10)
    bye = uac.create_request("BYE", pair.via("a"))
    assert bye.uri == "sip:b@10.0.0.2:5060"
    bye_key = pair.send(bye)
    pair.transfer()
    (bye_in,) = pair.events("b")
    assert isinstance(bye_in, RequestReceived) and bye_in.key is not None
    uas.receive_request(bye_in.request)
    assert uas.remote_cseq == inv.cseq.number + 1
    pair.respond(bye_in.request, 200)
    uas.terminate()
    pair.transfer()
    (bye_ok,) = [e for e in pair.events("a") if isinstance(e, ResponseReceived)]
    assert bye_ok.key == bye_key and bye_ok.response.status == 200
    assert uac.matches(bye_ok.response)
    uac.terminate()
    pair.run_out()
    assert pair.transaction_count == 0
    assert pair.a.transaction_state(invite_key) is None
    assert [s.label for s in pair.sent("a")] == ["INVITE", "ACK", "BYE"]
    assert [s.label for s in pair.sent("b")] == ["100 INVITE", "200 INVITE", "200 BYE"]
    assert not [e for side in ("a", "b") for e in pair.events(side) if isinstance(e, TransactionTimedOut)]


def test_subscribe_dialog_carries_notify_back() -> None:
    """GB28181 catalog subscription: the device (b) NOTIFYs inside the SUBSCRIBE dialog."""
    pair = EndpointPair()
    sub = pair.request("SUBSCRIBE", headers=[("Event", "Catalog"), ("Expires", "3600")])
    pair.send(sub)
    pair.transfer()
    (incoming,) = [e for e in pair.events("b") if isinstance(e, RequestReceived)]
    accepted = pair.respond(incoming.request, 200, headers=[("Contact", "<sip:b@10.0.0.2:5060>")])
    device = Dialog.from_uas(incoming.request, accepted)
    pair.transfer()
    (resp,) = [e for e in pair.events("a") if isinstance(e, ResponseReceived)]
    platform = Dialog.from_uac(sub, resp.response)
    notify = device.create_request(
        "NOTIFY", pair.via("b"), headers=[("Event", "Catalog"), ("Subscription-State", "active")],
        body=b"<Notify/>", content_type="Application/MANSCDP+xml",
    )
    assert notify.uri == "sip:a@10.0.0.1:5060"  # the SUBSCRIBE's Contact
    pair.send(notify, side="b")
    pair.transfer()
    (n_in,) = pair.events("a")
    assert isinstance(n_in, RequestReceived)
    assert platform.matches(n_in.request)
    platform.receive_request(n_in.request)
    pair.respond(n_in.request, 200, side="a")
    pair.transfer()
    pair.run_out()
    assert pair.transaction_count == 0
    assert incoming.key is not None
    assert pair.b.transaction_state(incoming.key) is None
