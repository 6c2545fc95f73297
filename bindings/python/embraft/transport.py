"""The stream transport of docs/WIRE.md over TCP: a 32-byte hello and a
16-byte reply, then length-prefixed frames; one outbound connection per
peer, used only for sending; reconnection with backoff; unreachable peers
reported to the node. `StreamTransport` carries one encoded message per
frame (a one-group node); `GroupStreamTransport` one group frame per frame
(a runtime, with the hello's group-frames flag set)."""

from __future__ import annotations

import logging
import random
import socket
import struct
import threading
import time
from collections import deque
from typing import Callable, Deque, Dict, Optional, Set, Tuple

from .errors import MessageError

logger = logging.getLogger("embraft.transport")

MAGIC = b"EMRF"
PROTOCOL_VERSION = 1
HELLO = struct.Struct("<4sHHQQQ")   # magic, version, flags, cluster, sender, recipient
REPLY = struct.Struct("<4sHHQ")     # magic, version, status, listener id
FRAME_HEADER = struct.Struct("<I")
MAX_FRAME_BYTES = 64 << 20
GROUP_FRAME_COUNT = struct.Struct("<I")        # messages in a group frame
GROUP_MESSAGE_HEADER = struct.Struct("<QI")    # group id, message length

STATUS_ACCEPTED = 0
STATUS_BAD_VERSION = 1
STATUS_WRONG_CLUSTER = 2
STATUS_WRONG_RECIPIENT = 3
STATUS_SENDER_REFUSED = 4
STATUS_FRAME_KIND = 5

# Bit 0 of the hello's flags: the dialer sends group frames.
FLAG_GROUP_FRAMES = 0x0001

HANDSHAKE_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
# A peer that stops reading must not stall its sender thread for ever.
WRITE_TIMEOUT = 10.0
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0
BACKOFF_JITTER = 0.2
STABLE_CONNECTION = 5.0
DEFAULT_QUEUE_LIMIT = 1024

Address = Tuple[str, int]


def parse_address(text: str) -> Address:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed during the handshake")
        data += chunk
    return bytes(data)


class _Outbound:
    """One peer's outbound connection. A frame is written straight from
    the caller's thread when the connection is idle (saving a thread
    switch per message, which dominates latency in Python); otherwise it
    waits in a bounded queue for the peer's sender thread, which also
    connects, reconnects and backs off."""

    def __init__(self, transport: "StreamTransport", peer: int):
        self.transport = transport
        self.peer = peer
        self.queue: Deque[bytes] = deque()   # frames, header included
        self.wakeup = threading.Condition()
        # Held by whoever writes to the socket, so frames keep their order.
        self.write_lock = threading.Lock()
        self.sock: Optional[socket.socket] = None
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"embraft-send-{transport.node_id}-{peer}")
        self.thread.start()

    def enqueue(self, data: bytes) -> bool:
        frame = FRAME_HEADER.pack(len(data)) + data
        with self.wakeup:
            if len(self.queue) >= self.transport.queue_limit:
                return False
            sock = self.sock
            if self.queue or sock is None or not self.write_lock.acquire(blocking=False):
                self.queue.append(frame)
                self.wakeup.notify()
                return True
        try:
            try:
                sent = sock.send(frame, socket.MSG_DONTWAIT)
            except OSError:
                sent = 0  # full or failed: the sender thread finds out which
            if sent < len(frame):
                with self.wakeup:
                    self.queue.appendleft(frame[sent:])
                    self.wakeup.notify()
        finally:
            self.write_lock.release()
        return True

    def _wait_for_messages(self) -> bool:
        with self.wakeup:
            while not self.queue and not self.transport.closed:
                self.wakeup.wait()
            return not self.transport.closed

    def _take_all(self) -> bytes:
        with self.wakeup:
            frames = b"".join(self.queue)
            self.queue.clear()
        return frames

    def _fail(self, reason: str) -> None:
        with self.wakeup:
            self.queue.clear()
        logger.debug("node %d: peer %d unreachable: %s", self.transport.node_id, self.peer,
                     reason)
        self.transport.unreachable(self.peer)

    def _connect(self) -> socket.socket:
        address = self.transport.resolve(self.peer)
        if address is None:
            raise ConnectionError("no known address")
        sock = socket.create_connection(address, timeout=CONNECT_TIMEOUT)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(HELLO.pack(MAGIC, PROTOCOL_VERSION, self.transport.hello_flags,
                                    self.transport.cluster_id, self.transport.node_id,
                                    self.peer))
            sock.settimeout(HANDSHAKE_TIMEOUT)
            magic, _version, status, _listener = REPLY.unpack(
                _receive_exactly(sock, REPLY.size))
            if magic != MAGIC or status != STATUS_ACCEPTED:
                raise ConnectionError(f"handshake refused (status {status})")
            # Blocking mode, so that MSG_DONTWAIT sends return at once; the
            # kernel's send timeout bounds the sender thread's writes.
            sock.settimeout(None)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                            struct.pack("ll", int(WRITE_TIMEOUT), 0))
        except BaseException:
            sock.close()
            raise
        return sock

    def _sleep(self, seconds: float) -> None:
        with self.wakeup:
            self.wakeup.wait_for(lambda: self.transport.closed, seconds)

    def _back_off(self, backoff: float) -> float:
        self._sleep(backoff * random.uniform(1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER))
        return min(backoff * 2, BACKOFF_MAX)

    def _run(self) -> None:
        backoff = BACKOFF_FIRST
        while self._wait_for_messages():
            try:
                sock = self._connect()
            except OSError as exc:
                self._fail(f"connect: {exc}")
                backoff = self._back_off(backoff)
                continue
            with self.write_lock:
                self.sock = sock
            connected_at = time.monotonic()
            try:
                while self._wait_for_messages():
                    with self.write_lock:
                        sock.sendall(self._take_all())
            except OSError as exc:
                with self.write_lock:
                    self.sock = None
                self._fail(f"write: {exc}")
                if time.monotonic() - connected_at >= STABLE_CONNECTION:
                    backoff = BACKOFF_FIRST
                backoff = self._back_off(backoff)
            finally:
                with self.write_lock:
                    self.sock = None
                sock.close()

    def stop(self) -> None:
        with self.wakeup:
            self.wakeup.notify_all()
        sock = self.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class StreamTransport:
    """The TCP stream transport for one node: each frame one message.

    `resolve(peer_id)` returns a peer's (host, port), or None while it is
    unknown; it is asked at every connection attempt, so addresses may
    change. With `listen`, the transport accepts connections itself;
    otherwise (raftd shares its port with HTTP) the owner hands accepted
    connections to `serve_connection`.
    """

    # What the frames carry, for the hello's flag: single messages here.
    group_frames = False

    def __init__(self, node_id: int, cluster_id: int,
                 resolve: Callable[[int], Optional[Address]],
                 listen: Optional[Address] = None,
                 queue_limit: int = DEFAULT_QUEUE_LIMIT):
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.hello_flags = FLAG_GROUP_FRAMES if self.group_frames else 0
        self.resolve = resolve
        self.queue_limit = queue_limit
        self.closed = False
        self._deliver: Callable[[bytes], None] = lambda data: None
        self.unreachable: Callable[[int], None] = lambda peer: None
        self._peers: Dict[int, _Outbound] = {}
        self._peers_lock = threading.Lock()
        self._inbound: Set[socket.socket] = set()
        self._inbound_lock = threading.Lock()
        self._listener: Optional[socket.socket] = None
        self._accept_thread: Optional[threading.Thread] = None
        if listen is not None:
            self._listener = socket.create_server(listen, reuse_port=False)

    @property
    def address(self) -> Optional[Address]:
        """The address the transport's own listener is bound to."""
        return self._listener.getsockname()[:2] if self._listener else None

    def start(self, deliver: Callable[[bytes], None],
              unreachable: Callable[[int], None]) -> None:
        self._deliver = deliver
        self.unreachable = unreachable
        if self._listener is not None:
            self._accept_thread = threading.Thread(target=self._accept, daemon=True,
                                                   name=f"embraft-accept-{self.node_id}")
            self._accept_thread.start()

    def send(self, to: int, data: bytes) -> None:
        if self.closed:
            return
        outbound = self._peers.get(to)
        if outbound is None:
            with self._peers_lock:
                outbound = self._peers.get(to)
                if outbound is None:
                    outbound = self._peers[to] = _Outbound(self, to)
        if not outbound.enqueue(data):
            self.unreachable(to)

    def _accept(self) -> None:
        assert self._listener is not None
        while not self.closed:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self.serve_connection, args=(sock,), daemon=True,
                             name=f"embraft-recv-{self.node_id}").start()

    def _handshake(self, sock: socket.socket) -> Optional[int]:
        """Reads the hello and answers it; the sender's id if accepted."""
        sock.settimeout(HANDSHAKE_TIMEOUT)
        magic, version, flags, cluster, sender, recipient = HELLO.unpack(
            _receive_exactly(sock, HELLO.size))
        if magic != MAGIC:
            return None
        if version != PROTOCOL_VERSION:
            status = STATUS_BAD_VERSION
        elif cluster != self.cluster_id:
            status = STATUS_WRONG_CLUSTER
        elif recipient != self.node_id:
            status = STATUS_WRONG_RECIPIENT
        elif sender == 0:
            status = STATUS_SENDER_REFUSED
        elif bool(flags & FLAG_GROUP_FRAMES) != self.group_frames:
            status = STATUS_FRAME_KIND
        else:
            status = STATUS_ACCEPTED
        sock.sendall(REPLY.pack(MAGIC, PROTOCOL_VERSION, status, self.node_id))
        if status != STATUS_ACCEPTED:
            logger.info("node %d: refused a connection from %d (status %d)", self.node_id,
                        sender, status)
            return None
        sock.settimeout(None)
        return sender

    def serve_connection(self, sock: socket.socket) -> None:
        """Serves one inbound connection whose hello is still unread (a
        peek does not consume it), until it closes. Blocks: run it on its
        own thread."""
        with self._inbound_lock:
            if self.closed:
                sock.close()
                return
            self._inbound.add(sock)
        try:
            sender = self._handshake(sock)
            if sender is not None:
                self._read_frames(sock, sender)
        except (OSError, struct.error) as exc:
            logger.debug("node %d: inbound connection ended: %s", self.node_id, exc)
        finally:
            with self._inbound_lock:
                self._inbound.discard(sock)
            sock.close()

    def _read_frames(self, sock: socket.socket, sender: int) -> None:
        buffer = bytearray()
        deliver = self._deliver
        header_size = FRAME_HEADER.size
        unpack = FRAME_HEADER.unpack_from
        while True:
            chunk = sock.recv(1 << 18)
            if not chunk:
                return
            buffer += chunk
            position = 0
            while len(buffer) - position >= header_size:
                (length,) = unpack(buffer, position)
                if length > MAX_FRAME_BYTES:
                    logger.warning("node %d: frame of %d bytes from %d exceeds the limit",
                                   self.node_id, length, sender)
                    return
                end = position + header_size + length
                if end > len(buffer):
                    break
                try:
                    deliver(bytes(buffer[position + header_size:end]))
                except MessageError as exc:
                    logger.warning("node %d: bad message from %d: %s", self.node_id,
                                   sender, exc)
                    return
                position = end
            del buffer[:position]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        with self._peers_lock:
            peers = list(self._peers.values())
        for outbound in peers:
            outbound.stop()
        with self._inbound_lock:
            inbound = list(self._inbound)
        for sock in inbound:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        # close() may run on one of these threads (a node's finalizer runs
        # wherever garbage collection happens), which cannot join itself.
        current = threading.current_thread()
        threads = [outbound.thread for outbound in peers] + [self._accept_thread]
        for thread in threads:
            if thread is not None and thread is not current:
                thread.join(timeout=5)


class GroupStreamTransport(StreamTransport):
    """The TCP stream transport for a runtime (embraft.runtime.Runtime):
    each frame one group frame (WIRE.md "Group frames"), built by the
    library with every group's messages of one poll for that peer and
    handed whole to the peer runtime's `step_frame`. Ids are runtime ids;
    one connection per peer runtime; a peer that cannot be reached is
    reported once, for all groups. Its listener refuses a dialer that
    sends single messages (status 5), as a `StreamTransport` refuses one
    that sends group frames."""

    group_frames = True

    def send(self, to: int, data: bytes) -> None:
        for frame in split_group_frame(data, MAX_FRAME_BYTES):
            super().send(to, frame)


def split_group_frame(frame: bytes, limit: int) -> list:
    """`frame` as group frames of at most `limit` bytes each, cut between
    messages and in order (WIRE.md "Group frames"): one poll of many groups
    can hold more for one peer than a stream frame may carry. A message
    too large for any frame is left out (Raft retransmits); a frame that
    does not parse is returned whole, for the receiver to refuse."""
    if len(frame) <= limit or len(frame) < GROUP_FRAME_COUNT.size:
        return [frame]
    (count,) = GROUP_FRAME_COUNT.unpack_from(frame)
    frames: list = []
    messages: list = []
    size = GROUP_FRAME_COUNT.size
    at = GROUP_FRAME_COUNT.size

    def flush() -> None:
        if messages:
            frames.append(GROUP_FRAME_COUNT.pack(len(messages)) + b"".join(messages))
            messages.clear()

    for _ in range(count):
        if len(frame) - at < GROUP_MESSAGE_HEADER.size:
            return [frame]
        _group, length = GROUP_MESSAGE_HEADER.unpack_from(frame, at)
        end = at + GROUP_MESSAGE_HEADER.size + length
        if end > len(frame):
            return [frame]
        message = frame[at:end]
        at = end
        if GROUP_FRAME_COUNT.size + len(message) > limit:
            logger.warning("dropping a message of %d bytes: no stream frame can carry it",
                           len(message))
            continue
        if size + len(message) > limit:
            flush()
            size = GROUP_FRAME_COUNT.size
        messages.append(message)
        size += len(message)
    if at != len(frame):
        return [frame]
    flush()
    return frames
