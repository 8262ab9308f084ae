"""Cutting syslog TCP streams (RFC 6587) and RELP sessions into messages (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homeport.logs.syslog.frames import (
    RelpError,
    RelpFrame,
    RelpFramer,
    SyslogFramer,
    relp_frame,
)


def feed_bytewise(framer: SyslogFramer, data: bytes) -> list[tuple[bytes, bool]]:
    out: list[tuple[bytes, bool]] = []
    for i in range(len(data)):
        out += framer.feed(data[i : i + 1])
    return out


def test_lf_framing() -> None:
    framer = SyslogFramer()
    assert framer.feed(b"<13>one\n<13>two\r\n<13>thr") == [
        (b"<13>one", False),
        (b"<13>two\r", False),
    ]
    assert framer.feed(b"ee\n") == [(b"<13>three", False)]
    assert framer.delimiter == b"\n"


def test_octet_counting() -> None:
    framer = SyslogFramer()
    stream = b"11 <13>1 - - x11 <13>a\nb c d\n"
    assert framer.feed(stream) == [(b"<13>1 - - x", False), (b"<13>a\nb c d", False)]
    assert feed_bytewise(SyslogFramer(), stream) == [
        (b"<13>1 - - x", False),
        (b"<13>a\nb c d", False),
    ]


def test_framing_is_decided_frame_by_frame() -> None:
    framer = SyslogFramer()
    assert framer.feed(b"5 <13>a<13>b\n3 <1>") == [
        (b"<13>a", False),
        (b"<13>b", False),
        (b"<1>", False),
    ]


def test_nul_terminated_messages_python_syslog_handler_style() -> None:
    framer = SyslogFramer()
    data = b"<11>Traceback:\n  File x\n  boom\x00<14>next\x00"
    assert framer.feed(data) == [(b"<11>Traceback:\n  File x\n  boom", False), (b"<14>next", False)]
    assert framer.delimiter == b"\x00"


def test_digits_without_a_length_are_a_plain_line() -> None:
    framer = SyslogFramer()
    assert framer.feed(b"2024-01-01 plain\n") == [(b"2024-01-01 plain", False)]
    assert framer.feed(b"1234567890123 x\n") == [(b"1234567890123 x", False)]


def test_an_over_long_counted_message_is_cut_and_the_rest_skipped() -> None:
    framer = SyslogFramer(max_size=10)
    out = framer.feed(b"25 <13>" + b"a" * 19)
    assert out == [(b"<13>aaaaaa", True)]
    assert framer.feed(b"aa3 <1>") == [(b"<1>", False)]
    assert len(framer.buffer) == 0


def test_an_over_long_line_is_cut_and_the_rest_skipped_without_buffering() -> None:
    framer = SyslogFramer(max_size=10)
    assert framer.feed(b"<13>" + b"x" * 20) == [(b"<13>xxxxxx", True)]
    for _ in range(100):
        assert framer.feed(b"y" * 1000) == []
        assert len(framer.buffer) == 0
    assert framer.feed(b"yy\n<13>ok\n") == [(b"<13>ok", False)]


def test_json_lines_mode_never_counts_octets() -> None:
    framer = SyslogFramer(octet_counting=False)
    assert framer.feed(b'12 {"a": 1}\n{"b":2}\n') == [(b'12 {"a": 1}', False), (b'{"b":2}', False)]


def test_pending_is_the_unterminated_rest() -> None:
    framer = SyslogFramer()
    framer.feed(b"<13>a\n<13>b")
    assert framer.pending() == b"<13>b"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b and b"\x00" not in b),
        max_size=8,
    ),
    st.data(),
)
def test_any_split_of_a_stream_gives_the_same_messages(
    messages: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(
        b"%d %s" % (len(m), m) if i % 2 else m.lstrip(b"0123456789\r\n\x00") + b"\n"
        for i, m in enumerate(messages)
    )
    whole = SyslogFramer().feed(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    framer = SyslogFramer()
    pieces: list[tuple[bytes, bool]] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        pieces += framer.feed(stream[start:cut])
        start = cut
    assert pieces == whole


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 50))
def test_no_stream_raises_and_the_buffer_stays_bounded(data: bytes, max_size: int) -> None:
    framer = SyslogFramer(max_size=max_size)
    for i in range(0, len(data), 7):
        for message, _ in framer.feed(data[i : i + 7]):
            assert len(message) <= max_size
        assert len(framer.buffer) <= max_size + 16


# -- RELP ---------------------------------------------------------------------------


def test_relp_frames() -> None:
    framer = RelpFramer()
    offers = (
        b"relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog"
    )
    stream = relp_frame(1, "open", offers) + b"2 syslog 12 <13>hi there\n" + relp_frame(3, "close")
    frames = feed_all(framer, stream)
    assert [f.command for f in frames] == ["open", "syslog", "close"]
    assert frames[0].data == offers
    assert frames[1] == RelpFrame(2, "syslog", b"<13>hi there")
    assert frames[2] == RelpFrame(3, "close", b"")


def feed_all(framer: RelpFramer, stream: bytes) -> list[RelpFrame]:
    out: list[RelpFrame] = []
    for i in range(len(stream)):
        out += framer.feed(stream[i : i + 1])
    return out


def test_relp_frame_bytes() -> None:
    assert relp_frame(7, "rsp", b"200 OK") == b"7 rsp 6 200 OK\n"
    assert relp_frame(0, "serverclose") == b"0 serverclose 0\n"


@pytest.mark.parametrize(
    "stream",
    [
        b"x open 0\n",
        b"1 op3n 0\n",
        b"1 syslog 3 abcd\n",
        b"1 syslog 3abc\n",
        b"1 close 0 \n",
        b"1 syslog 999999 ",
    ],
)
def test_broken_relp_framing_is_an_error(stream: bytes) -> None:
    framer = RelpFramer(max_data=1000)
    with pytest.raises(RelpError):
        framer.feed(stream + b"x" * 20)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_relp_garbage_raises_only_relp_errors(data: bytes) -> None:
    framer = RelpFramer(max_data=100)
    try:
        framer.feed(data)
    except RelpError:
        pass
    assert len(framer.buffer) <= 100 + 60
