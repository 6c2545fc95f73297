"""raftd: the replicated key/value server of docs/RAFTD.md.

    python -m embraft.raftd [-h HOST] [-p PORT] [-join HOST:PORT] [-shards N] [-v] [-debug]
                            [-trace] DATA-DIR

HTTP and the Raft stream transport share one port: each accepted connection
is peeked at, and one starting with EMRF goes to the transport. Snapshots
(every RAFTD_SNAPSHOT_EVERY applied entries, RAFTD_COMPACT_KEEP entries kept
behind them) are in the format of RAFTD.md "Snapshots", shared with the C
and the Go raftd. With `-shards N` above 1 the keys are spread over N Raft
groups on one embraft runtime (RAFTD.md "Shards").
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType
from typing import List, Optional

from .._log import TRACE
from .codec import MAX_SHARDS
from .http import RaftdServer
from .service import Raftd

logger = logging.getLogger("raftd")


def _configure_logging(verbose: bool, debug: bool, trace: bool) -> None:
    logging.basicConfig(stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    level = logging.INFO if verbose or debug or trace else logging.WARNING
    logging.getLogger("raftd").setLevel(level)
    logging.getLogger("embraft").setLevel(level)
    core = TRACE if trace else logging.DEBUG if debug else logging.WARNING
    logging.getLogger("embraft.core").setLevel(core)
    logging.getLogger("embraft.transport").setLevel(logging.DEBUG if debug or trace else level)


def _shards(text: str) -> int:
    value = int(text, 10)
    if not 1 <= value <= MAX_SHARDS:
        raise ValueError(text)
    return value


_shards.__name__ = f"number of shards (1 to {MAX_SHARDS})"


def parse_arguments(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="raftd", add_help=False,
                                     description="Replicated key/value server (docs/RAFTD.md)")
    parser.add_argument("-h", dest="host", default="localhost")
    parser.add_argument("-p", dest="port", type=int, default=4001)
    parser.add_argument("-join", dest="join")
    parser.add_argument("-shards", dest="shards", type=_shards, default=1)
    parser.add_argument("-v", dest="verbose", action="store_true")
    parser.add_argument("-debug", action="store_true")
    parser.add_argument("-trace", action="store_true")
    parser.add_argument("-help", "--help", action="help")
    parser.add_argument("data_dir", metavar="DATA-DIR")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    arguments = parse_arguments(argv)
    _configure_logging(arguments.verbose, arguments.debug, arguments.trace)
    server: Optional[RaftdServer] = None

    def fatal() -> None:
        # On the node's thread: stop serving from another one (shutdown
        # waits for serve_forever, which may not have started yet).
        if server is not None:
            threading.Thread(target=server.shutdown, daemon=True).start()

    raftd = Raftd(arguments.host, arguments.port, arguments.data_dir, fatal, arguments.shards)
    # Bind before joining so a taken port fails at once; connections from
    # peers wait in the backlog until the node serves them.
    server = RaftdServer((arguments.host, arguments.port), raftd)

    def stop(signum: int, frame: Optional[FrameType]) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        raftd.start(arguments.join)
        if not raftd.failed:
            logger.info("node %d serving on %s", raftd.node_id, raftd.advertised)
            server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        raftd.close()
    if raftd.failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
