"""embraft (Python binding) against PySyncObj: a 3-node cluster of each on
loopback, one process per node, the same workload: 100-byte writes issued at
the leader by 1 and by 16 concurrent client threads, each waiting for its
write to be committed and applied.

    pip install ./bindings/python pysyncobj
    python bindings/python/benchmarks/vs_pysyncobj.py [--seconds 5]

Durability:
- embraft runs with its default, EMBRAFT_SYNC_ALWAYS: every entry is on disk
  (fdatasync, group commit) on a majority before it counts as committed.
- embraft-nosync, for reference, shows what the syncs cost: never syncing
  (EMBRAFT_SYNC_NEVER) is for tests and benchmarks only.
- PySyncObj runs as its documentation recommends for throughput: in-memory
  journal (journalFile=None, no fullDumpFile) and appendEntriesUseBatch=True
  ("improve overall performance (requests per second)"). It never syncs.
  That setting sends appends only every appendEntriesPeriod (100 ms), so
  clients that wait for each write see 100 ms latencies; the script also
  runs appendEntriesUseBatch=False ("improve single request speed") and
  reports the ratio against both.

The script runs one worker process per node (this file with --worker) and
talks to them over stdin/stdout, one JSON line per request.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import BinaryIO, Callable, Dict, List

VALUE_BYTES = 100
REPOSITORY = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


# ----- workers ----------------------------------------------------------------------

def run_clients(write: Callable[[int, int], None], clients: int, seconds: float) -> Dict:
    """`clients` threads call write(client, sequence) until the time is up;
    returns the count and the latencies."""
    latencies: List[List[float]] = [[] for _ in range(clients)]
    deadline = time.perf_counter() + seconds

    def client(number: int) -> None:
        mine = latencies[number]
        sequence = 0
        while True:
            start = time.perf_counter()
            if start >= deadline:
                return
            write(number, sequence)
            mine.append(time.perf_counter() - start)
            sequence += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    merged = sorted(latency for per_client in latencies for latency in per_client)
    return {"writes": len(merged), "seconds": elapsed,
            "p50": merged[len(merged) // 2] if merged else 0.0,
            "p99": merged[min(len(merged) - 1, len(merged) * 99 // 100)] if merged else 0.0}


def payload(client: int, sequence: int) -> bytes:
    key = b"%04d:%012d" % (client, sequence)
    return key + b"v" * (VALUE_BYTES - len(key))


def embraft_worker(index: int, ports: List[int], directory: str, sync: bool):
    import embraft
    from embraft.transport import StreamTransport

    class Store:
        def __init__(self) -> None:
            self.values: Dict[bytes, bytes] = {}

        def apply(self, log_index: int, data: bytes) -> None:
            self.values[data[:17]] = data

        def snapshot(self, out: BinaryIO) -> None:
            for value in self.values.values():
                out.write(value)

        def restore(self, src: BinaryIO) -> None:
            self.values = {}
            while True:
                value = src.read(VALUE_BYTES)
                if not value:
                    break
                self.values[value[:17]] = value

    node_id = index + 1
    addresses = {i + 1: ("127.0.0.1", port) for i, port in enumerate(ports)}
    transport = StreamTransport(node_id, 1, addresses.get, listen=addresses[node_id])
    config = embraft.Config(id=node_id, peers=list(addresses), data_dir=directory,
                            tick_interval=0.05, sync=sync)
    node = embraft.Node(config, Store(), transport)
    node.wait_for_leader(30)

    def write(client: int, sequence: int) -> None:
        data = payload(client, sequence)
        while True:
            try:
                node.propose(data).result(timeout=30)
                return
            except embraft.BusyError:
                time.sleep(0.0005)

    return (lambda: node.is_leader), write, node.close


def pysyncobj_worker(index: int, ports: List[int], directory: str, batch: bool):
    from pysyncobj import SyncObj, SyncObjConf, replicated

    class Store(SyncObj):
        def __init__(self, self_address: str, partners: List[str]) -> None:
            # Journal in memory (no journalFile, no fullDumpFile); batched
            # appends are PySyncObj's documented throughput setting.
            config = SyncObjConf(appendEntriesUseBatch=batch, journalFile=None,
                                 fullDumpFile=None, dynamicMembershipChange=False)
            super().__init__(self_address, partners, conf=config)
            self.values: Dict[bytes, bytes] = {}

        @replicated
        def set(self, data: bytes) -> None:
            self.values[data[:17]] = data

    addresses = [f"127.0.0.1:{port}" for port in ports]
    store = Store(addresses[index], [a for i, a in enumerate(addresses) if i != index])
    deadline = time.monotonic() + 30
    while store.getStatus().get("leader") is None and time.monotonic() < deadline:
        time.sleep(0.05)

    def is_leader() -> bool:
        status = store.getStatus()
        return status.get("leader") is not None and str(status["leader"]) == str(status["self"])

    def write(client: int, sequence: int) -> None:
        store.set(payload(client, sequence), sync=True, timeout=30)

    return is_leader, write, store.destroy


def worker_main(system: str, index: int, ports: List[int], directory: str) -> None:
    if system.startswith("embraft"):
        is_leader, write, close = embraft_worker(index, ports, directory,
                                                 sync=system == "embraft")
    else:
        is_leader, write, close = pysyncobj_worker(index, ports, directory,
                                                   batch=system == "pysyncobj-batch")
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "leader":
            answer = {"leader": is_leader()}
        elif request["op"] == "run":
            run_clients(write, request["clients"], 0.5)  # warm-up
            answer = run_clients(write, request["clients"], request["seconds"])
        else:
            break
        print(json.dumps(answer), flush=True)
    close()


# ----- the orchestrator -----------------------------------------------------------

def free_ports(count: int) -> List[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


SYSTEMS = {
    "embraft": "embraft, fsync every commit (default EMBRAFT_SYNC_ALWAYS)",
    "embraft-nosync": "embraft, EMBRAFT_SYNC_NEVER (for reference only: not durable)",
    "pysyncobj-batch": "PySyncObj, in memory, appendEntriesUseBatch=True (its throughput setting)",
    "pysyncobj-nobatch": "PySyncObj, in memory, appendEntriesUseBatch=False (its latency setting)",
}
DIVERGENCE_WARNING = "state machine may have diverged"


class Cluster:
    def __init__(self, system: str, scratch: str):
        ports = free_ports(3)
        self.workers = []
        self.error_logs = []
        for index in range(3):
            directory = os.path.join(scratch, f"{system}-{index}")
            command = [sys.executable, os.path.abspath(__file__), "--worker", system,
                       "--index", str(index), "--ports", ",".join(map(str, ports)),
                       "--dir", directory]
            error_log = os.path.join(scratch, f"{system}-{index}.stderr")
            self.error_logs.append(error_log)
            with open(error_log, "w") as errors:
                self.workers.append(subprocess.Popen(command, stdin=subprocess.PIPE,
                                                     stdout=subprocess.PIPE, stderr=errors,
                                                     text=True))
        for worker in self.workers:
            self._read(worker)

    @staticmethod
    def _read(worker: subprocess.Popen) -> Dict:
        line = worker.stdout.readline()
        if not line:
            raise RuntimeError("a worker exited")
        return json.loads(line)

    def ask(self, worker: subprocess.Popen, request: Dict) -> Dict:
        worker.stdin.write(json.dumps(request) + "\n")
        worker.stdin.flush()
        return self._read(worker)

    def leader(self) -> subprocess.Popen:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            leaders = [w for w in self.workers if self.ask(w, {"op": "leader"})["leader"]]
            if len(leaders) == 1:
                return leaders[0]
            time.sleep(0.1)
        raise RuntimeError("no single leader")

    def divergence_warnings(self) -> int:
        count = 0
        for path in self.error_logs:
            with open(path, errors="replace") as log:
                count += sum(DIVERGENCE_WARNING in line for line in log)
        return count

    def close(self) -> None:
        for worker in self.workers:
            try:
                worker.stdin.write(json.dumps({"op": "quit"}) + "\n")
                worker.stdin.close()
            except OSError:
                pass
        for worker in self.workers:
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            worker.stdout.close()


def benchmark(system: str, scratch: str, clients_list: List[int], seconds: float) -> Dict:
    cluster = Cluster(system, scratch)
    try:
        leader = cluster.leader()
        results = {clients: cluster.ask(leader, {"op": "run", "clients": clients,
                                                 "seconds": seconds})
                   for clients in clients_list}
    finally:
        cluster.close()
    results["warnings"] = cluster.divergence_warnings()
    return results


def rate(result: Dict) -> float:
    return result["writes"] / result["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per run")
    parser.add_argument("--worker", choices=list(SYSTEMS), help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        worker_main(arguments.worker, arguments.index,
                    [int(p) for p in arguments.ports.split(",")], arguments.dir)
        return

    # On the repository's disk (target/), not a tmpfs: syncs must be real.
    base = os.path.join(REPOSITORY, "target")
    os.makedirs(base, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="bench-pysyncobj-", dir=base)
    clients_list = [1, 16]
    try:
        results = {system: benchmark(system, scratch, clients_list, arguments.seconds)
                   for system in SYSTEMS}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"3 nodes on loopback, one process each; {VALUE_BYTES}-byte writes at the leader, "
          f"each client waiting for commit and apply; {arguments.seconds:g} s per run "
          "after a 0.5 s warm-up")
    for system, description in SYSTEMS.items():
        print(f"  {system}: {description}")
    print(f"{'system':<18} {'clients':>7} {'writes/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for system, by_clients in results.items():
        for clients in clients_list:
            result = by_clients[clients]
            print(f"{system:<18} {clients:>7} {rate(result):>10.0f} "
                  f"{result['p50'] * 1e3:>8.2f} {result['p99'] * 1e3:>8.2f}")
    for system in ("pysyncobj-batch", "pysyncobj-nobatch"):
        if results[system]["warnings"]:
            print(f"note: {system} logged {results[system]['warnings']} "
                  f"'{DIVERGENCE_WARNING}' warnings")
    ours = results["embraft"]
    for clients in clients_list:
        documented = results["pysyncobj-batch"][clients]
        best = max((results[s][clients] for s in ("pysyncobj-batch", "pysyncobj-nobatch")),
                   key=rate)
        print(f"{clients:>2} client(s): embraft/PySyncObj throughput "
              f"{rate(ours[clients]) / rate(documented):.1f}x against its throughput setting, "
              f"{rate(ours[clients]) / rate(best):.1f}x against its faster setting; "
              f"p99 {ours[clients]['p99'] * 1e3:.2f} ms vs {documented['p99'] * 1e3:.2f} ms "
              f"and {best['p99'] * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
