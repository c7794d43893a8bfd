"""A real mosquitto broker for tests, plus a paho observer that records what a subscriber receives.

    broker = Broker(tmp_path / "broker").start()          # plain TCP on a free loopback port
    broker.stop()                                          # SIGKILL: no goodbye, no persistence flush
    broker.start()                                         # again, on the same port
    Broker(d, tls=TlsListener(files.ca, files.server_cert, files.server_key, require_certificate=True))
    Broker(d, users={"edge": "secret"})                    # password_file + allow_anonymous false
    Broker(d, users=..., hashed_here=True)                 # the file hashed here, not by mosquitto_passwd
    Broker(d, persistence=True)                            # sessions survive a restart (see below)

`persistence=True` saves the broker's database after every change (autosave_on_changes with an
interval of 1), so a persistent (clean_session=False) observer's subscription survives even a
SIGKILL: the observer then receives, after the restart, what was published while it was away.

The broker's output goes to a log file (never a pipe: an orphaned broker holding a pipe would hang
the test run); `Broker.log` reads it for assertion messages.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")


def mosquitto_available() -> bool:
    return Path(MOSQUITTO).is_file() and os.access(MOSQUITTO, os.X_OK)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------------
# Password file


def password_line(user: str, password: str, salt: bytes | None = None, iterations: int = 101) -> str:
    """One mosquitto 2.0 password file line: user:$7$<iterations>$<salt b64>$<PBKDF2-HMAC-SHA512 b64>."""
    salt = os.urandom(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, dklen=64)
    salt_b64 = base64.b64encode(salt).decode()
    return f"{user}:$7${iterations}${salt_b64}${base64.b64encode(digest).decode()}"


def write_password_file(path: Path, users: Mapping[str, str], use_tool: bool | None = None) -> Path:
    """With mosquitto_passwd when installed (use_tool None), else (or with use_tool False) hashed here."""
    tool = MOSQUITTO_PASSWD if use_tool is not False else None
    if use_tool and tool is None:
        raise RuntimeError("mosquitto_passwd is not installed")
    path.parent.mkdir(parents=True, exist_ok=True)
    if tool is None:
        path.write_text("".join(password_line(u, p) + "\n" for u, p in users.items()))
    else:
        path.write_text("")
        for user, password in users.items():
            subprocess.run([tool, "-b", str(path), user, password], check=True, capture_output=True)
    path.chmod(0o644)
    return path


# --------------------------------------------------------------------------------------------------
# Broker


@dataclass(frozen=True)
class TlsListener:
    ca: Path
    cert: Path
    key: Path
    require_certificate: bool = False


class Broker:
    host = "127.0.0.1"

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        tls: TlsListener | None = None,
        users: Mapping[str, str] | None = None,
        persistence: bool = False,
        hashed_here: bool = False,
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.tls = tls
        self.users = dict(users or {})
        self.persistence = persistence
        self.log_path = directory / "mosquitto.log"
        self.config_path = directory / "mosquitto.conf"
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self._write_config(hashed_here)

    def _write_config(self, hashed_here: bool) -> None:
        lines = [
            "user root",  # as root mosquitto would otherwise drop to its own user and lose the files
            f"listener {self.port} {self.host}",
            "log_dest stderr",
            "log_type all",
            "max_keepalive 65535",
        ]
        if self.tls is not None:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.cert}", f"keyfile {self.tls.key}"]
            lines.append(f"require_certificate {'true' if self.tls.require_certificate else 'false'}")
        if self.users:
            passwords = write_password_file(
                self.directory / "passwords", self.users, use_tool=False if hashed_here else None
            )
            lines += [f"password_file {passwords}", "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.directory}/",
                "autosave_on_changes true",
                "autosave_interval 1",
            ]
        else:
            lines.append("persistence false")
        self.config_path.write_text("\n".join(lines) + "\n")

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> Broker:
        assert not self.running, "broker already running"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal does not reach it before teardown
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}:\n{self.log}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError as exc:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"mosquitto not listening on {self.port} in {timeout} s:\n{self.log}"
                    ) from exc
                time.sleep(0.02)

    def wait_session_saved(self, client_id: str, timeout: float = 5.0) -> None:
        """With persistence: wait until the saved database holds this client's session."""
        db = self.directory / "mosquitto.db"
        deadline = time.monotonic() + timeout
        while not (db.is_file() and client_id.encode() in db.read_bytes()):
            if time.monotonic() > deadline:
                raise AssertionError(f"session of {client_id} not saved in {db} within {timeout} s")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGKILL: the broker gets no chance to say or save anything."""
        self._end(signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM: a clean shutdown (with persistence, the database is saved)."""
        self._end(signal.SIGTERM)

    def _end(self, sig: int) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


# --------------------------------------------------------------------------------------------------
# Observer


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    at: float = field(compare=False)
    dup: bool = field(default=False, compare=False)  # the broker's own redelivery (DUP flag)


class Observer:
    """A paho subscriber on its own network thread; every message it gets is kept in `messages`.

    It (re)subscribes in on_connect, so after a broker restart it subscribes again by itself;
    `wait_subscribed(n)` waits for the n-th SUBACK. With `clean_session=False` the broker keeps its
    subscription (and queues QoS 1 messages) while it is away.
    """

    def __init__(
        self,
        broker: Broker,
        topics: Iterable[str],
        client_id: str | None = None,
        clean_session: bool = True,
        ca: Path | None = None,
        client_cert: tuple[Path, Path] | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.broker = broker
        self.topics = list(topics)
        self.client_id = client_id or f"observer-{os.urandom(4).hex()}"
        self.messages: list[Received] = []
        self.connects = 0
        self.subacks = 0
        self._cond = threading.Condition()
        client = mqtt.Client(client_id=self.client_id, clean_session=clean_session)
        if ca is not None:
            cert, key = client_cert or (None, None)
            client.tls_set(
                ca_certs=str(ca),
                certfile=None if cert is None else str(cert),
                keyfile=None if key is None else str(key),
                cert_reqs=ssl.CERT_REQUIRED,
            )
        if username is not None:
            client.username_pw_set(username, password)
        client.reconnect_delay_set(min_delay=1, max_delay=1)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self.client = client

    # paho thread
    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, rc: int) -> None:
        if rc != 0:
            return
        with self._cond:
            self.connects += 1
            self._cond.notify_all()
        client.subscribe([(topic, 1) for topic in self.topics])

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, granted: object) -> None:
        with self._cond:
            self.subacks += 1
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(
                Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), time.time(), bool(msg.dup))
            )
            self._cond.notify_all()

    # test thread
    def start(self, timeout: float = 10.0) -> Observer:
        self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        self.wait_subscribed(1, timeout)
        return self

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def wait_subscribed(self, count: int, timeout: float = 10.0) -> None:
        self.wait_for(lambda: self.subacks >= count, timeout, f"SUBACK #{count}")

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"observer: no {what} within {timeout} s; got {len(self.messages)} message(s): "
                        f"{[(m.topic, m.payload[:60]) for m in self.messages[-10:]]}"
                    )
                self._cond.wait(left)

    def received(self) -> list[Received]:
        with self._cond:
            return list(self.messages)

    async def until(self, condition: Callable[[], bool], timeout: float, what: str = "condition") -> None:
        """Like wait_for, for async tests: polls, so the event loop (and a sink on it) keeps running."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                last = [(m.topic, m.payload[:60]) for m in self.received()[-10:]]
                raise AssertionError(
                    f"observer: no {what} within {timeout} s; {len(self.messages)} message(s), last: {last}"
                )
            await asyncio.sleep(0.02)

    async def message(
        self, topic: str, predicate: Callable[[Received], bool] = lambda m: True, timeout: float = 10.0
    ) -> Received:
        """The first message on `topic` that satisfies `predicate` (waiting for it)."""
        await self.until(lambda: any(predicate(m) for m in self.on(topic)), timeout, f"message on {topic}")
        return next(m for m in self.on(topic) if predicate(m))

    def on(self, topic: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]
