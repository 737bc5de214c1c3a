"""Apache Kafka for tests and benchmarks: ``deploy/kafka/run`` as a child process.

The launcher prints ``bootstrap=...`` once every node accepts clients; this wraps it so a
test can start a node or a three-node cluster, kill one node the hard way, and start the
same cluster again on its data directory (same ports, same records). With ``sasl_ssl`` the
nodes also have a SASL_SSL listener (SCRAM users from ``scram``), announced by a second line
``sasl_ssl=...``.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parent.parent
LAUNCHER = REPO / "deploy" / "kafka" / "run"


class LauncherError(RuntimeError):
    """The launcher exited or said nothing before its deadline; the message has its stderr."""


class ApacheKafka:
    """A KRaft cluster of ``nodes`` combined broker+controller nodes on 127.0.0.1."""

    def __init__(
        self,
        nodes: int = 1,
        *,
        data: Path | None = None,
        quick: bool = True,
        survive_node_loss: bool = False,
        timeout: float = 240.0,
        sasl_ssl: Path | None = None,
        scram: Sequence[tuple[str, str]] = (),
    ) -> None:
        """``sasl_ssl``: a directory with ``ca.pem``, ``broker.pem`` and ``broker.key`` (see
        deploy/kafka/README.md) for a SASL_SSL listener; ``scram``: (user, password) pairs
        created as SCRAM-SHA-256/512 users when the storage is formatted, passed to the
        launcher through its environment, never on a command line."""
        self.nodes = nodes
        self._own_data = data is None
        self.data = data or Path(tempfile.mkdtemp(prefix="rebalancer-kafka-"))
        self.quick = quick
        self.survive_node_loss = survive_node_loss
        self.timeout = timeout
        self.sasl_ssl = sasl_ssl
        self.scram = list(scram)
        self.bootstrap_servers = ""
        self.sasl_ssl_servers = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._log = self.data / "launcher.log"

    def start(self) -> ApacheKafka:
        """Start (or start again on the same data) and wait for the bootstrap line."""
        self.data.mkdir(parents=True, exist_ok=True)
        cmd = [str(LAUNCHER), "--nodes", str(self.nodes), "--data", str(self.data)]
        cmd += ["--timeout", str(int(self.timeout))]
        if self.quick:
            cmd.append("--quick")
        if self.survive_node_loss:
            cmd.append("--survive-node-loss")
        env = None
        if self.sasl_ssl is not None:
            cmd += ["--sasl-ssl", str(self.sasl_ssl)]
            env = {**os.environ, "KAFKA_RUN_SCRAM": "".join(f"{u}:{p}\n" for u, p in self.scram)}
        elif self.scram:
            raise ValueError("scram users need a sasl_ssl listener")
        lines = 2 if self.sasl_ssl is not None else 1
        log = open(self._log, "ab")  # noqa: SIM115 - the launcher writes to it while it runs
        self._process = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=log, start_new_session=True, env=env
        )
        log.close()
        assert self._process.stdout is not None
        deadline = time.monotonic() + self.timeout + 60
        line = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self._process.stdout, selectors.EVENT_READ)
            while line.count(b"\n") < lines:
                left = deadline - time.monotonic()
                if left <= 0 or self._process.poll() is not None:
                    self.stop()
                    raise LauncherError(f"deploy/kafka/run did not start:\n{self.log_tail()}")
                if sel.select(timeout=min(left, 1.0)):
                    chunk = os.read(self._process.stdout.fileno(), 4096)
                    if not chunk:
                        continue
                    line += chunk
        text, *more = line.decode().strip().splitlines() or [""]
        if not text.startswith("bootstrap=") or (
            more and not (len(more) == 1 and more[0].startswith("sasl_ssl="))
        ):
            self.stop()
            raise LauncherError(f"unexpected launcher output {line!r}:\n{self.log_tail()}")
        self.bootstrap_servers = text.removeprefix("bootstrap=")
        if more:
            self.sasl_ssl_servers = more[0].removeprefix("sasl_ssl=")
        return self

    def node_pid(self, node: int) -> int:
        return int((self.data / f"node-{node}" / "pid").read_text().strip())

    def kill_node(self, node: int) -> None:
        """SIGKILL one node's JVM (a crash: no clean shutdown, no flush)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.node_pid(node), signal.SIGKILL)

    def wait_exited(self, timeout: float = 60.0) -> int | None:
        """The launcher's exit code once it has exited (after its only node died)."""
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._own_data:
            import shutil

            shutil.rmtree(self.data, ignore_errors=True)
