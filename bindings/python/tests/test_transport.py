"""The stream transport byte for byte (docs/WIRE.md, "Stream transport"),
against raw sockets standing in for a Go or C peer."""

import socket
import struct
import threading

import pytest
from conftest import wait_until

from embraft.errors import MalformedMessageError
from embraft.transport import GroupStreamTransport, StreamTransport, split_group_frame

CLUSTER = 0x1122334455667788


def receive_exactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def hello(cluster=CLUSTER, sender=2, recipient=1, version=1, flags=0):
    return b"EMRF" + struct.pack("<HHQQQ", version, flags, cluster, sender, recipient)


class Received:
    def __init__(self):
        self.messages = []
        self.unreachable = []

    def deliver(self, data):
        if data == b"bad":
            raise MalformedMessageError("not a message")
        self.messages.append(data)


@pytest.fixture
def listening():
    received = Received()
    transport = StreamTransport(1, CLUSTER, lambda peer: None, listen=("127.0.0.1", 0))
    transport.start(received.deliver, received.unreachable.append)
    yield transport, received
    transport.close()


def connect(transport):
    sock = socket.create_connection(transport.address, timeout=10)
    return sock


@pytest.mark.parametrize("request_bytes,status", [
    (hello(), 0),
    (hello(version=2), 1),
    (hello(cluster=5), 2),
    (hello(recipient=9), 3),
    (hello(sender=0), 4),
    (hello(flags=0xFFFE), 0),  # unknown flags are ignored
    (hello(flags=0x0001), 5),  # group frames: not what a one-group node takes
    (hello(flags=0xFFFF), 5),
])
def test_listener_answers_the_hello(listening, request_bytes, status):
    transport, _ = listening
    with connect(transport) as sock:
        sock.sendall(request_bytes)
        reply = receive_exactly(sock, 16)
        assert reply == b"EMRF" + struct.pack("<HHQ", 1, status, 1)
        if status != 0:
            assert sock.recv(1) == b""  # closed after a refusal


def test_listener_delivers_frames_unchanged_and_closes_on_bad_ones(listening):
    transport, received = listening
    with connect(transport) as sock:
        sock.sendall(hello())
        assert receive_exactly(sock, 16)[6:8] == b"\x00\x00"
        # Two frames in one write and one split across writes.
        sock.sendall(struct.pack("<I", 3) + b"one" + struct.pack("<I", 3) + b"two")
        sock.sendall(struct.pack("<I", 5) + b"th")
        sock.sendall(b"ree")
        assert wait_until(lambda: received.messages == [b"one", b"two", b"three"], 10)
        sock.sendall(struct.pack("<I", 3) + b"bad")
        assert sock.recv(1) == b""


def test_listener_closes_on_an_oversized_frame(listening):
    transport, _ = listening
    with connect(transport) as sock:
        sock.sendall(hello())
        receive_exactly(sock, 16)
        sock.sendall(struct.pack("<I", (64 << 20) + 1))
        assert sock.recv(1) == b""


def test_dialer_sends_the_hello_then_frames():
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    port = server.getsockname()[1]
    received = Received()
    transport = StreamTransport(2, CLUSTER, lambda peer: ("127.0.0.1", port))
    transport.start(received.deliver, received.unreachable.append)
    try:
        transport.send(1, b"first")
        connection, _ = server.accept()
        with connection:
            connection.settimeout(10)
            assert receive_exactly(connection, 32) == hello(sender=2, recipient=1)
            connection.sendall(b"EMRF" + struct.pack("<HHQ", 1, 0, 1))
            assert receive_exactly(connection, 9) == struct.pack("<I", 5) + b"first"
            transport.send(1, b"second")
            assert receive_exactly(connection, 10) == struct.pack("<I", 6) + b"second"
    finally:
        transport.close()
        server.close()


def test_dialer_reports_refusals_and_unknown_peers_unreachable():
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    port = server.getsockname()[1]
    received = Received()
    addresses = {1: ("127.0.0.1", port)}
    transport = StreamTransport(2, CLUSTER, addresses.get)
    transport.start(received.deliver, received.unreachable.append)

    def refuse():
        connection, _ = server.accept()
        with connection:
            receive_exactly(connection, 32)
            connection.sendall(b"EMRF" + struct.pack("<HHQ", 1, 2, 1))

    refuser = threading.Thread(target=refuse)
    refuser.start()
    try:
        transport.send(1, b"x")
        refuser.join(timeout=10)
        assert wait_until(lambda: 1 in received.unreachable, 10)
        transport.send(3, b"x")  # no address known
        assert wait_until(lambda: 3 in received.unreachable, 10)
    finally:
        transport.close()
        server.close()


def test_full_outbound_queue_reports_the_peer_unreachable():
    received = Received()
    blocker = threading.Event()

    def resolve(peer):
        blocker.wait(10)  # holds the sender thread so the queue fills
        return None

    transport = StreamTransport(2, CLUSTER, resolve, queue_limit=4)
    transport.start(received.deliver, received.unreachable.append)
    try:
        for _ in range(10):
            transport.send(1, b"x")
        assert 1 in received.unreachable
    finally:
        blocker.set()
        transport.close()


@pytest.mark.parametrize("request_bytes,status", [
    (hello(flags=0x0001), 0),
    (hello(flags=0xFFFF), 0),
    (hello(flags=0x0000), 5),  # single messages: not what a runtime takes
    (hello(flags=0xFFFE), 5),
    (hello(flags=0x0001, cluster=5), 2),
])
def test_group_listener_expects_the_group_frames_flag(request_bytes, status):
    received = Received()
    transport = GroupStreamTransport(1, CLUSTER, lambda peer: None, listen=("127.0.0.1", 0))
    transport.start(received.deliver, received.unreachable.append)
    try:
        with connect(transport) as sock:
            sock.sendall(request_bytes)
            assert receive_exactly(sock, 16) == b"EMRF" + struct.pack("<HHQ", 1, status, 1)
            if status != 0:
                assert sock.recv(1) == b""
            else:
                # A group frame goes to deliver whole, length prefix removed.
                frame = struct.pack("<I", 1) + struct.pack("<QI", 7, 3) + b"abc"
                sock.sendall(struct.pack("<I", len(frame)) + frame)
                assert wait_until(lambda: received.messages == [frame], 10)
    finally:
        transport.close()


def test_group_dialer_sets_the_flag_and_each_kind_refuses_the_other():
    """A runtime's transport dialing a one-group node's listener (and the
    reverse) is refused with status 5 and reports the peer unreachable."""
    node_side, runtime_side = Received(), Received()
    node = StreamTransport(1, CLUSTER, lambda peer: None, listen=("127.0.0.1", 0))
    addresses = {1: node.address}
    runtime = GroupStreamTransport(2, CLUSTER, addresses.get, listen=("127.0.0.1", 0))
    addresses[2] = runtime.address
    dialer = StreamTransport(1, CLUSTER, addresses.get)
    node.start(node_side.deliver, node_side.unreachable.append)
    runtime.start(runtime_side.deliver, runtime_side.unreachable.append)
    dialer.start(node_side.deliver, node_side.unreachable.append)
    try:
        runtime.send(1, b"frame")
        dialer.send(2, b"message")
        assert wait_until(lambda: 1 in runtime_side.unreachable
                          and 2 in node_side.unreachable, 10)
        assert node_side.messages == [] and runtime_side.messages == []
    finally:
        for transport in (node, runtime, dialer):
            transport.close()

    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    port = server.getsockname()[1]
    transport = GroupStreamTransport(2, CLUSTER, lambda peer: ("127.0.0.1", port))
    transport.start(runtime_side.deliver, runtime_side.unreachable.append)
    try:
        transport.send(1, b"frame")
        connection, _ = server.accept()
        with connection:
            connection.settimeout(10)
            assert receive_exactly(connection, 32) == hello(sender=2, recipient=1, flags=1)
    finally:
        transport.close()
        server.close()


def _group_frame(messages):
    body = b"".join(struct.pack("<QI", group, len(m)) + m for group, m in messages)
    return struct.pack("<I", len(messages)) + body


def test_a_group_frame_over_the_limit_is_cut_between_messages_in_order():
    messages = [(7, b"\x01" * 10), (9, b"\x02" * 30), (7, b"\x03" * 5), (8, b"\x04" * 20)]
    frame = _group_frame(messages)
    assert split_group_frame(frame, len(frame)) == [frame]
    # 4 + 12 + 30 = 46 bytes is the largest single-message frame here.
    parts = split_group_frame(frame, 50)
    assert parts == [_group_frame(messages[:1]), _group_frame(messages[1:2]),
                     _group_frame(messages[2:3]), _group_frame(messages[3:])]
    assert all(len(p) <= 50 for p in parts)
    parts = split_group_frame(frame, 64)
    assert parts == [_group_frame(messages[:1]), _group_frame(messages[1:3]),
                     _group_frame(messages[3:])]


def test_a_message_no_frame_can_carry_is_left_out_and_garbage_stays_whole():
    messages = [(1, b"a" * 40), (2, b"b")]
    assert split_group_frame(_group_frame(messages), 30) == [_group_frame(messages[1:])]
    garbage = struct.pack("<I", 3) + b"\xff" * 60
    assert split_group_frame(garbage, 30) == [garbage]
