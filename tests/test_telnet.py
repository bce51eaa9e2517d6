"""The sans-IO telnet codec (pyprocserv._core.telnet), proved without a socket.

These tests prove that:
* the opening offer and every reply are procServ's bytes (behaviour §3.1): WILL ECHO + DO
  LINEMODE, silence for the answers to our own offer, WONT/DONT for every option we do not
  support, AYT and friends ignored;
* the one deliberate difference, NAWS, is accepted (WILL NAWS -> DO NAWS -> WindowSize) and
  solicited only after the peer has negotiated something itself, so a raw client (socat, nc,
  a procServControl scraper) sees exactly procServ's bytes;
* the real netkit telnet client's opening gets exactly our two replies and no data;
* negotiation never loops (RFC 1143), not even against a second codec, and a request that
  changes nothing gets no answer (not even a second refusal), so an option storm's replies are
  bounded by the number of options, not of requests;
* the parser never raises, ignores chunk boundaries, turns IAC IAC back into 0xFF, recovers
  from broken subnegotiations, and round-trips :meth:`TelnetConnection.encode`.
"""

from __future__ import annotations

import random

from support.chunks import split_at
from hypothesis import given, settings
from hypothesis import strategies as st

from pyprocserv._core.telnet import (
    DO,
    DONT,
    ECHO,
    IAC,
    LINEMODE,
    MAX_SUBNEGOTIATION,
    NAWS,
    SB,
    SE,
    SGA,
    WILL,
    WONT,
    Command,
    Data,
    OptionChanged,
    ProtocolError,
    Subnegotiation,
    TelnetConnection,
    WindowSize,
)

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True)

TTYPE = 24
AYT = 246
NOP = 241
IP = 244
BRK = 243

# procServ's opening, behaviour §3.1 and §10.1.
PROCSERV_OFFER = bytes.fromhex("fffb01fffd22")
# The netkit/inetutils telnet client's first bytes after our offer (behaviour §10.5).
NETKIT_OPENING = bytes.fromhex(
    "fffd01fffd03fffb22fffa22030100000362030402"
    "0f05000007621c08020409421a0a027f0b02150c02170d02120e02160f0211100213110000120000fff0"
)


def iac(*codes: int) -> bytes:
    return bytes((IAC, *codes))


def server() -> TelnetConnection:
    """A codec in the state a fresh procServ connection is in: the offer has been sent."""
    conn = TelnetConnection()
    assert conn.initiate() == PROCSERV_OFFER
    return conn


def feed(conn: TelnetConnection, data: bytes) -> tuple[list, bytes]:
    conn.receive_data(data)
    return conn.events(), conn.data_to_send()


def triples(wire: bytes) -> list[bytes]:
    assert len(wire) % 3 == 0, wire.hex()
    return [wire[i : i + 3] for i in range(0, len(wire), 3)]


# -- strategies ---------------------------------------------------------------------------------

_verbs = st.sampled_from([WILL, WONT, DO, DONT])
_options = st.sampled_from([ECHO, SGA, TTYPE, NAWS, LINEMODE, 0, 255])
_pieces = st.one_of(
    st.binary(max_size=20),
    st.builds(lambda verb, option: iac(verb, option), _verbs, _options),
    st.builds(lambda code: iac(code), st.integers(0, 255)),
    st.builds(
        lambda option, payload, end: iac(SB, option) + payload + end,
        _options,
        st.binary(max_size=12),
        st.sampled_from([iac(SE), iac(NOP), b"", iac()]),
    ),
    st.builds(lambda option, size: iac(SB, option) + size + iac(SE), _options, st.binary(min_size=4, max_size=4)),
    st.just(iac(IAC)),
    st.just(iac()),
)
telnet_streams = st.lists(_pieces, max_size=25).map(b"".join)




# -- the opening and procServ's replies (behaviour §3.1) ------------------------------------


def test_initiate_offers_will_echo_and_do_linemode_like_procserv():
    assert TelnetConnection().initiate() == b"\xff\xfb\x01\xff\xfd\x22"


def test_client_do_echo_after_our_offer_gets_no_echo_reply():
    conn = server()
    events, wire = feed(conn, iac(DO, ECHO))
    # Only our one-time NAWS solicitation may follow a first negotiation; nothing about ECHO.
    assert wire == iac(DO, NAWS)
    assert conn.local_enabled(ECHO)
    assert OptionChanged(ECHO, local=True, enabled=True) in events


def test_client_will_linemode_after_our_offer_gets_no_linemode_reply():
    conn = server()
    events, wire = feed(conn, iac(DO, ECHO))  # the first negotiation: solicitation sent here
    events, wire = feed(conn, iac(WILL, LINEMODE))
    assert wire == b""
    assert conn.remote_enabled(LINEMODE)
    assert events == [OptionChanged(LINEMODE, local=False, enabled=True)]


def test_do_sga_is_refused_with_wont():
    conn = server()
    feed(conn, iac(DO, ECHO))
    events, wire = feed(conn, iac(DO, SGA))
    assert wire == b"\xff\xfc\x03"
    assert not conn.local_enabled(SGA)
    assert events == []


def test_do_ttype_is_refused_with_wont():
    conn = server()
    feed(conn, iac(DO, ECHO))
    assert feed(conn, iac(DO, TTYPE))[1] == b"\xff\xfc\x18"


def test_will_ttype_is_refused_with_dont():
    conn = server()
    feed(conn, iac(DO, ECHO))
    assert feed(conn, iac(WILL, TTYPE))[1] == b"\xff\xfe\x18"
    assert not conn.remote_enabled(TTYPE)


def test_sb_linemode_is_reported_and_gets_no_reply():
    conn = server()
    feed(conn, iac(DO, ECHO) + iac(WILL, LINEMODE))
    events, wire = feed(conn, iac(SB, LINEMODE) + b"\x01\x03" + iac(SE))
    assert wire == b""
    assert events == [Subnegotiation(LINEMODE, b"\x01\x03")]


def test_ayt_is_a_command_event_and_gets_no_reply():
    conn = server()
    events, wire = feed(conn, b"ab" + iac(AYT) + b"cd")
    assert events == [Data(b"ab"), Command(AYT), Data(b"cd")]
    assert wire == b""


def test_other_bare_commands_are_events_without_replies():
    conn = server()
    events, wire = feed(conn, iac(IP) + iac(BRK) + iac(NOP))
    assert events == [Command(IP), Command(BRK), Command(NOP)]
    assert wire == b""


def test_iac_iac_is_one_literal_ff_byte():
    conn = server()
    events, wire = feed(conn, b"a" + iac(IAC) + b"b")
    assert events == [Data(b"a\xffb")]
    assert wire == b""


def test_iac_iac_split_between_chunks_is_still_one_ff_byte():
    conn = server()
    conn.receive_data(b"a\xff")
    conn.receive_data(b"\xffb")
    assert conn.events() == [Data(b"a\xffb")]


def test_encode_doubles_every_ff_and_touches_nothing_else():
    assert TelnetConnection.encode(b"a\xffb\r\n\x00\xff\xff") == b"a\xff\xffb\r\n\x00\xff\xff\xff\xff"
    assert TelnetConnection.encode(b"plain\n") == b"plain\n"


# -- NAWS: the deliberate difference ----------------------------------------------------------


def test_will_naws_is_accepted_with_do_naws():
    conn = server()
    events, wire = feed(conn, iac(WILL, NAWS))
    assert wire == b"\xff\xfd\x1f"
    assert conn.remote_enabled(NAWS)
    assert events == [OptionChanged(NAWS, local=False, enabled=True)]


def test_naws_subnegotiation_after_will_naws_is_a_window_size():
    conn = server()
    feed(conn, iac(WILL, NAWS))
    events, wire = feed(conn, iac(SB, NAWS) + b"\x00\x50\x00\x18" + iac(SE))
    assert events == [WindowSize(columns=80, rows=24)]
    assert wire == b""


def test_naws_width_containing_ff_is_escaped_as_iac_iac_inside_sb():
    conn = server()
    feed(conn, iac(WILL, NAWS))
    # width 0x01FF = 511, height 0xFF00 = 65280: each 0xFF doubled on the wire
    events, _ = feed(conn, iac(SB, NAWS) + b"\x01\xff\xff\xff\xff\x00" + iac(SE))
    assert events == [WindowSize(columns=511, rows=65280)]


def test_naws_subnegotiation_before_will_naws_is_not_a_window_size():
    conn = server()
    events, wire = feed(conn, iac(SB, NAWS) + b"\x00\x50\x00\x18" + iac(SE))
    assert not any(isinstance(e, WindowSize) for e in events)
    assert events == [Subnegotiation(NAWS, b"\x00\x50\x00\x18")]
    assert wire == b""


def test_naws_with_wrong_payload_length_is_a_protocol_error_not_a_window_size():
    conn = server()
    feed(conn, iac(WILL, NAWS))
    events, _ = feed(conn, iac(SB, NAWS) + b"\x00\x50\x00" + iac(SE) + b"x")
    assert [type(e) for e in events] == [ProtocolError, Data]
    assert events[-1] == Data(b"x")


def test_do_naws_is_solicited_once_after_the_peers_first_negotiation():
    conn = server()
    events, wire = feed(conn, iac(DO, ECHO))
    assert wire == iac(DO, NAWS)
    # later negotiations do not solicit again
    assert feed(conn, iac(WILL, LINEMODE))[1] == b""
    assert feed(conn, iac(DO, SGA))[1] == iac(WONT, SGA)
    assert feed(conn, iac(DO, ECHO))[1] == b""


def test_solicited_naws_answered_with_will_gets_no_further_reply():
    conn = server()
    feed(conn, iac(DO, ECHO))
    events, wire = feed(conn, iac(WILL, NAWS) + iac(SB, NAWS) + b"\x00\x84\x00\x2b" + iac(SE))
    assert wire == b""
    assert events == [
        OptionChanged(NAWS, local=False, enabled=True),
        WindowSize(columns=132, rows=43),
    ]


def test_solicited_naws_refused_with_wont_gets_no_reply_and_no_resolicitation():
    conn = server()
    feed(conn, iac(DO, ECHO))
    assert feed(conn, iac(WONT, NAWS))[1] == b""
    assert not conn.remote_enabled(NAWS)
    assert feed(conn, iac(DO, SGA))[1] == iac(WONT, SGA)


def test_bare_commands_and_subnegotiations_do_not_trigger_the_naws_solicitation():
    conn = server()
    _, wire = feed(conn, iac(AYT) + iac(NOP) + iac(SB, LINEMODE) + b"\x01" + iac(SE) + iac(IAC))
    assert wire == b""


@SETTINGS
@given(st.binary().filter(lambda b: 0xFF not in b))
def test_a_raw_client_that_never_sends_iac_gets_no_reply_bytes(payload):
    conn = server()
    conn.receive_data(payload)
    assert conn.data_to_send() == b""
    assert conn.events() == ([Data(payload)] if payload else [])


# -- the real telnet client ---------------------------------------------------------------------


def test_netkit_telnet_opening_gets_exactly_wont_sga_and_our_naws_solicitation():
    conn = server()
    events, wire = feed(conn, NETKIT_OPENING)
    assert sorted(triples(wire)) == sorted([b"\xff\xfc\x03", b"\xff\xfd\x1f"])
    assert not any(isinstance(e, Data) for e in events)
    assert not any(isinstance(e, ProtocolError) for e in events)
    assert conn.local_enabled(ECHO) and conn.remote_enabled(LINEMODE)


def test_netkit_telnet_opening_byte_by_byte_gives_the_same_replies():
    whole = server()
    whole.receive_data(NETKIT_OPENING)
    split = server()
    for byte in NETKIT_OPENING:
        split.receive_data(bytes([byte]))
    assert split.events() == whole.events()
    assert split.data_to_send() == whole.data_to_send()


def test_typed_enter_from_telnet_arrives_as_cr_nul_data():
    conn = server()
    feed(conn, NETKIT_OPENING)
    assert feed(conn, b"abc\r\x00") == ([Data(b"abc\r\x00")], b"")


# -- negotiation never loops (RFC 1143) -------------------------------------------------------


def test_repeated_will_naws_gets_one_reply_only():
    conn = server()
    _, wire = feed(conn, iac(WILL, NAWS) * 50)
    assert wire == iac(DO, NAWS)


def test_repeated_do_echo_after_our_offer_gets_no_echo_reply_at_all():
    conn = server()
    _, wire = feed(conn, iac(DO, ECHO) * 50)
    assert wire == iac(DO, NAWS)


def test_repeated_will_linemode_after_our_offer_gets_no_reply_at_all():
    conn = server()
    _, wire = feed(conn, iac(WILL, LINEMODE) * 50)
    assert wire == iac(DO, NAWS)


def test_a_refused_option_asked_again_gets_no_second_refusal():
    conn = server()
    _, wire = feed(conn, iac(DO, SGA) * 10 + iac(WILL, TTYPE) * 10)
    assert triples(wire) == [iac(WONT, SGA), iac(DO, NAWS), iac(DONT, TTYPE)]
    assert feed(conn, iac(DO, SGA) + iac(WILL, TTYPE)) == ([], b"")


def test_an_option_storm_gets_replies_bounded_by_the_options_not_the_requests():
    rng = random.Random(9)
    conn = server()
    storm = b"".join(iac(rng.choice((DO, WILL)), rng.randrange(256)) for _ in range(30_000))
    _, wire = feed(conn, storm)
    # at most one answer per option and side, and our NAWS solicitation
    assert len(wire) <= 3 * (2 * 256 + 1)
    assert feed(conn, storm) == ([], b"")


def test_wont_and_dont_for_disabled_options_get_no_reply():
    conn = server()
    feed(conn, iac(DO, ECHO))
    assert feed(conn, iac(WONT, SGA) + iac(DONT, TTYPE) + iac(WONT, TTYPE))[1] == b""


def test_dont_echo_after_it_was_enabled_is_acknowledged_once():
    conn = server()
    feed(conn, iac(DO, ECHO))
    events, wire = feed(conn, iac(DONT, ECHO) * 5)
    assert wire == iac(WONT, ECHO)
    assert events == [OptionChanged(ECHO, local=True, enabled=False)]
    assert not conn.local_enabled(ECHO)


@SETTINGS
@given(st.lists(st.tuples(_verbs, _options), max_size=60))
def test_every_received_negotiation_gets_at_most_one_reply(commands):
    conn = server()
    conn.receive_data(b"".join(iac(verb, option) for verb, option in commands))
    replies = triples(conn.data_to_send())
    # one reply per command at most, plus the single NAWS solicitation
    assert len(replies) <= len(commands) + 1
    assert replies.count(iac(DO, NAWS)) <= 1


@SETTINGS
@given(st.lists(st.tuples(_verbs, _options), max_size=200))
def test_a_request_is_answered_only_when_it_changes_an_option_or_is_first_refused(commands):
    conn = server()
    asked: set[tuple[int, int]] = set()
    for verb, option in commands:
        local = verb in (DO, DONT)
        enabled = conn.local_enabled if local else conn.remote_enabled
        before = enabled(option)
        conn.receive_data(iac(verb, option))
        replies = [r for r in triples(conn.data_to_send()) if r != iac(DO, NAWS)]  # the solicitation
        changed = enabled(option) != before
        first = verb in (WILL, DO) and (local, option) not in asked
        if verb in (WILL, DO):
            asked.add((local, option))
        assert len(replies) <= (1 if changed or first else 0), (verb, option, replies)


@SETTINGS
@given(st.tuples(_verbs, _options), st.integers(2, 30))
def test_repeating_one_negotiation_yields_no_reply_once_the_option_is_settled(command, times):
    verb, option = command
    conn = server()
    conn.receive_data(iac(verb, option))
    conn.data_to_send()
    conn.events()
    conn.receive_data(iac(verb, option) * times)
    # The first answer settled the option: the same request again changes nothing, so it gets
    # no answer, not even a repeated refusal.
    assert conn.data_to_send() == b""
    assert conn.events() == []


_all_options = st.frozensets(st.sampled_from([ECHO, SGA, TTYPE, NAWS, LINEMODE]))


@SETTINGS
@given(_all_options, _all_options, _all_options, _all_options, _all_options)
def test_two_codecs_negotiating_settle_quickly_and_agree(
    peer_local, peer_remote, peer_solicit, peer_will, peer_do
):
    ours = TelnetConnection()
    peer = TelnetConnection(
        local_options=peer_local, remote_options=peer_remote, solicit_remote=peer_solicit
    )
    to_peer = ours.initiate()
    to_ours = peer.initiate(will=tuple(sorted(peer_will)), do=tuple(sorted(peer_do)))
    for _ in range(10):
        if not to_peer and not to_ours:
            break
        peer.receive_data(to_peer)
        ours.receive_data(to_ours)
        to_peer, to_ours = ours.data_to_send(), peer.data_to_send()
    else:
        raise AssertionError("negotiation did not settle in 10 rounds")
    for option in (ECHO, SGA, TTYPE, NAWS, LINEMODE):
        assert ours.local_enabled(option) == peer.remote_enabled(option), option
        assert ours.remote_enabled(option) == peer.local_enabled(option), option
    assert not any(isinstance(e, Data) for e in ours.events())


# -- parser robustness --------------------------------------------------------------------------


def test_overlong_subnegotiation_is_a_protocol_error_and_data_after_it_is_delivered():
    conn = server()
    events, _ = feed(conn, iac(SB, TTYPE) + b"x" * (MAX_SUBNEGOTIATION + 100) + iac(SE) + b"hello")
    assert [type(e) for e in events] == [ProtocolError, Data]
    assert events[-1] == Data(b"hello")


def test_overlong_subnegotiation_fed_in_pieces_is_still_one_protocol_error():
    conn = server()
    conn.receive_data(iac(SB, TTYPE))
    for _ in range(100):
        conn.receive_data(b"y" * 64)
    conn.receive_data(iac(SE) + b"after")
    events = conn.events()
    assert [type(e) for e in events] == [ProtocolError, Data]
    assert events[-1] == Data(b"after")


def test_subnegotiation_of_exactly_the_maximum_length_is_accepted():
    conn = server()
    payload = b"z" * MAX_SUBNEGOTIATION
    events, _ = feed(conn, iac(SB, TTYPE) + payload + iac(SE))
    assert events == [Subnegotiation(TTYPE, payload)]


def test_command_inside_subnegotiation_ends_it_with_a_protocol_error_and_is_still_read():
    conn = server()
    events, _ = feed(conn, iac(SB, TTYPE) + b"ab" + iac(AYT) + b"tail")
    assert [type(e) for e in events] == [ProtocolError, Command, Data]
    assert events[1:] == [Command(AYT), Data(b"tail")]


def test_iac_iac_inside_subnegotiation_is_one_ff_in_the_payload():
    conn = server()
    events, _ = feed(conn, iac(SB, TTYPE) + b"\x00" + iac(IAC) + b"\x01" + iac(SE))
    assert events == [Subnegotiation(TTYPE, b"\x00\xff\x01")]


def test_data_around_negotiation_keeps_its_order():
    conn = server()
    events, _ = feed(conn, b"one" + iac(DO, ECHO) + b"two" + iac(AYT) + b"three")
    kinds = [(type(e).__name__, getattr(e, "data", None)) for e in events]
    assert kinds == [
        ("Data", b"one"),
        ("OptionChanged", None),
        ("Data", b"two"),
        ("Command", None),
        ("Data", b"three"),
    ]


def test_events_are_consumed_by_each_call():
    conn = server()
    conn.receive_data(b"abc" + iac(AYT))
    assert conn.events() == [Data(b"abc"), Command(AYT)]
    assert conn.events() == []
    assert conn.data_to_send() == b""


@SETTINGS
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data):
    conn = server()
    conn.receive_data(data)
    events = conn.events()
    wire = conn.data_to_send()
    assert all(isinstance(e, (Data, Command, OptionChanged, WindowSize, Subnegotiation, ProtocolError)) for e in events)
    assert len(wire) % 3 == 0


@SETTINGS
@given(telnet_streams)
def test_telnet_shaped_streams_never_raise_and_replies_are_whole_commands(data):
    conn = server()
    conn.receive_data(data)
    conn.events()
    for reply in triples(conn.data_to_send()):
        assert reply[0] == IAC and reply[1] in (WILL, WONT, DO, DONT)


@SETTINGS
@given(st.one_of(telnet_streams, st.binary(max_size=200)), st.lists(st.integers(0, 400), max_size=12))
def test_any_chunking_gives_the_same_events_and_replies(data, cuts):
    whole = server()
    whole.receive_data(data)
    chunked = server()
    for chunk in split_at(data, cuts):
        chunked.receive_data(chunk)
    assert chunked.events() == whole.events()
    assert chunked.data_to_send() == whole.data_to_send()


@SETTINGS
@given(st.one_of(telnet_streams, st.binary(max_size=100)))
def test_byte_by_byte_feeding_gives_the_same_events_and_replies(data):
    whole = server()
    whole.receive_data(data)
    single = server()
    for byte in data:
        single.receive_data(bytes([byte]))
    assert single.events() == whole.events()
    assert single.data_to_send() == whole.data_to_send()


@SETTINGS
@given(st.binary())
def test_encoded_payload_decodes_to_exactly_one_data_event(payload):
    conn = server()
    conn.receive_data(TelnetConnection.encode(payload))
    assert conn.events() == ([Data(payload)] if payload else [])
    assert conn.data_to_send() == b""


@SETTINGS
@given(st.binary(), st.lists(st.integers(0, 600), max_size=8))
def test_encoded_payload_split_anywhere_still_decodes_to_one_data_event(payload, cuts):
    conn = server()
    for chunk in split_at(TelnetConnection.encode(payload), cuts):
        conn.receive_data(chunk)
    assert conn.events() == ([Data(payload)] if payload else [])
