"""raftd's HTTP API (RAFTD.md "HTTP API") and the server that shares its
port with the stream transport."""

from __future__ import annotations

import json
import logging
import socket
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..transport import MAGIC, parse_address
from .codec import MAX_KEY_BYTES, MAX_VALUE_BYTES, encode_delete, encode_set
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .service import FORWARDED_HEADER, HttpError, Raftd

logger = logging.getLogger("raftd")

MAX_DRAINED_BODY = 16 << 20


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "RaftdServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        logger.debug("%s %s", self.address_string(), format % args)

    def send_response(self, code: int, message: Optional[str] = None) -> None:
        # A request line too malformed to parse leaves no method.
        self.server.raftd.count_request(self.command or "NONE", int(code))
        super().send_response(code, message)

    def _reply(self, code: int, body: bytes = b"", content_type: str = "text/plain",
               headers: Optional[Dict[str, str]] = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _body(self, limit: int) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            # Read what the client is sending before answering, or it may
            # see a reset instead of the 413; past a bound, just hang up.
            if length <= MAX_DRAINED_BODY:
                while length > 0:
                    chunk = self.rfile.read(min(length, 1 << 16))
                    if not chunk:
                        break
                    length -= len(chunk)
            else:
                self.close_connection = True
            raise HttpError(413, f"body larger than {limit} bytes\n")
        return self.rfile.read(length) if length else b""

    def _key(self, path: str) -> bytes:
        key = urllib.parse.unquote_to_bytes(path[len("/db/"):])
        if not key or len(key) > MAX_KEY_BYTES or b"/" in key:
            raise HttpError(400, "keys are non-empty path segments of at most 1024 bytes\n")
        try:
            key.decode("utf-8")
        except UnicodeDecodeError:
            raise HttpError(400, "keys are UTF-8\n") from None
        return key

    def _dispatch(self, route: Callable[[str, Dict[str, List[str]]], None]) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        try:
            route(parsed.path, urllib.parse.parse_qs(parsed.query))
        except HttpError as exc:
            self._reply(exc.code, exc.text.encode(), headers=exc.headers)
        except Exception as exc:
            logger.exception("request %s %s failed", self.command, self.path)
            self._reply(500, f"internal error: {exc}\n".encode())

    def _forward_if_follower(self, body: Optional[bytes], group: int = 1) -> bool:
        """Relays a write to `group`'s leader; False when this node leads it."""
        raftd = self.server.raftd
        if raftd.group(group).is_leader:
            return False
        if self.headers.get(FORWARDED_HEADER):
            raise HttpError(503, "not the leader\n", {"Retry-After": "1"})
        status, answer_headers, answer = raftd.forward_to_leader(group, self.command,
                                                                 self.path, body)
        relayed = {k: v for k, v in answer_headers.items() if k.lower() == "retry-after"}
        self._reply(status, answer, answer_headers.get("Content-Type", "text/plain"), relayed)
        return True

    def do_GET(self) -> None:
        self._dispatch(self._get)

    def do_POST(self) -> None:
        self._dispatch(self._post)

    def do_DELETE(self) -> None:
        self._dispatch(self._delete)

    def _get(self, path: str, query: Dict[str, List[str]]) -> None:
        raftd = self.server.raftd
        if path.startswith("/db/"):
            key = self._key(path)
            group = raftd.key_group(key)
            if query.get("stale", [""])[0] != "true":
                raftd.wait_read_point(group)
            value = raftd.stores[group].get(key)
            if value is None:
                raise HttpError(404, "key not found\n")
            self._reply(200, value, "application/octet-stream")
        elif path == "/status":
            self._reply(200, json.dumps(raftd.status_json()).encode(), "application/json")
        elif path == "/metrics":
            self._reply(200, raftd.metrics_text().encode(), METRICS_CONTENT_TYPE)
        else:
            raise HttpError(404, "no such endpoint\n")

    def _post(self, path: str, query: Dict[str, List[str]]) -> None:
        raftd = self.server.raftd
        if path.startswith("/db/"):
            key = self._key(path)
            value = self._body(MAX_VALUE_BYTES)
            group = raftd.key_group(key)
            if not self._forward_if_follower(value, group):
                raftd.propose_and_wait(encode_set(key, value), group)
                self._reply(200)
        elif path == "/join":
            body = self._body(64 * 1024)
            node_id, address, group = _parse_join(body, raftd.shards)
            if not self._forward_if_follower(body, group):
                description = raftd.join_member(node_id, address, group)
                self._reply(200, json.dumps(description).encode(), "application/json")
        elif path == "/leave":
            body = self._body(64 * 1024)
            node_id, only = _parse_leave(body, raftd.node_id, raftd.shards)
            forwarded: Dict[str, object] = {"id": str(node_id)}
            if only is not None:
                forwarded["group"] = only
            if not self._forward_if_follower(json.dumps(forwarded).encode(), only or 1):
                if only is None:
                    raftd.leave_member(node_id)
                else:
                    raftd.leave_group(node_id, only)
                self._reply(200)
        else:
            raise HttpError(404, "no such endpoint\n")

    def _delete(self, path: str, query: Dict[str, List[str]]) -> None:
        if not path.startswith("/db/"):
            raise HttpError(404, "no such endpoint\n")
        key = self._key(path)
        self._body(0)
        raftd = self.server.raftd
        group = raftd.key_group(key)
        if not self._forward_if_follower(None, group):
            raftd.propose_and_wait(encode_delete(key), group)
            self._reply(200)


def _parse_node_id(value: object) -> int:
    node_id = int(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else 0
    if not 0 < node_id < 1 << 64:
        raise ValueError("bad node id")
    return node_id


def _parse_group(request: Dict, shards: int) -> Optional[int]:
    """The optional "group" of a /join or /leave body: 1 ... shards."""
    if "group" not in request:
        return None
    group = request["group"]
    if isinstance(group, bool) or not isinstance(group, int) or not 1 <= group <= shards:
        raise HttpError(400, f"group must be a number from 1 to {shards}\n")
    return group


def _parse_join(body: bytes, shards: int) -> Tuple[int, str, int]:
    try:
        request = json.loads(body)
        node_id = _parse_node_id(request["id"])
        address = request["addr"]
        if not isinstance(address, str):
            raise ValueError("addr")
        parse_address(address)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise HttpError(400, 'expected {"id": "<id>", "addr": "host:port"}\n') from None
    return node_id, address, _parse_group(request, shards) or 1


def _parse_leave(body: bytes, own_id: int, shards: int) -> Tuple[int, Optional[int]]:
    if not body.strip():
        return own_id, None
    try:
        request = json.loads(body)
        node_id = _parse_node_id(request["id"])
    except (ValueError, KeyError, TypeError):
        raise HttpError(400, 'expected {"id": "<id>"} or no body\n') from None
    return node_id, _parse_group(request, shards)


class RaftdServer(ThreadingHTTPServer):
    """HTTP and the stream transport on one port, told apart by a peek at
    each connection's first four bytes."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: Tuple[str, int], raftd: Raftd):
        self.raftd = raftd
        super().__init__(address, RequestHandler)

    # A stream server's requests are sockets (the base also types datagram ones).
    def finish_request(self, request: socket.socket,  # type: ignore[override]
                       client_address: Any) -> None:
        request.settimeout(5.0)
        try:
            first = request.recv(4, socket.MSG_PEEK | socket.MSG_WAITALL)
        except OSError:
            return
        transport = self.raftd.transport
        if first == MAGIC:
            if transport is not None:
                transport.serve_connection(request)
            return
        request.settimeout(None)
        super().finish_request(request, client_address)

