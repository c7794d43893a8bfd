"""The OPC UA server against a real asyncua client over TCP (127.0.0.1, a free port): the address space,
values pushed on verdicts, the Inspect method, users, client certificates, live station changes and
restarts. The stations service is a fake here (a StationsView that answers with built verdicts).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto import cert_gen
from asyncua.crypto.security_policies import SecurityPolicyAes256Sha256RsaPss, SecurityPolicyBasic256Sha256
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from waiting import eventually

from edge_runtime.latest import Latest
from edge_runtime.opcua.certificates import own_certificate
from edge_runtime.opcua.config import OpcUaConfig
from edge_runtime.opcua.server import OpcUaServer
from edge_runtime.settings import OpcUaSettings, StationSettings
from edge_runtime.stations.status import StationStatus
from edge_runtime.stations.triggers import NotAccepting
from edge_runtime.stations.verdict import Defect, NoVerdictReason, Trigger, Verdict, VerdictKind
from edge_runtime.status import CameraState, CameraStatus, LoadState, ModelStatus, Serving, StatusBoard

NS = "urn:test:stations"
CLIENT_URI = "urn:test:opcua-client"
USER, PASSWORD = "plc", "s3cret-pw"


# ---- a fake stations service ---------------------------------------------------------------------


class FakeStations:
    """Answers each part at once: `fail` with a scratch for part ids starting with "bad", no verdict
    (deadline) for "late...", else `pass`."""

    def __init__(self, stations: tuple[str, ...]) -> None:
        self.statuses: Latest[str, StationStatus] = Latest()
        for station in stations:
            self.statuses.put(station, StationStatus(station, ("cam1",)))
        self.accepting = True
        self.hold = False  # leave futures pending (to cancel a caller)
        self.futures: list[asyncio.Future[Verdict]] = []
        self.triggers: list[Trigger] = []

    def submit(self, trigger: Trigger) -> asyncio.Future[Verdict]:
        if not self.accepting:
            raise NotAccepting("stopping")
        self.triggers.append(trigger)
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        if not self.hold:
            self.decide(future, trigger)
        return future

    def decide(self, future: asyncio.Future[Verdict], trigger: Trigger) -> None:
        verdict = make_verdict(trigger)
        before = self.statuses.get(trigger.station) or StationStatus(trigger.station, ("cam1",))
        self.statuses.put(
            trigger.station,
            replace(
                before,
                parts=before.parts + 1,
                passes=before.passes + (verdict.verdict is VerdictKind.PASS),
                fails=before.fails + (verdict.verdict is VerdictKind.FAIL),
                last=verdict,
            ),
        )
        future.set_result(verdict)


def make_verdict(trigger: Trigger) -> Verdict:
    failed = trigger.part_id.startswith("bad")
    late = trigger.part_id.startswith("late")
    kind = VerdictKind.NO_VERDICT if late else VerdictKind.FAIL if failed else VerdictKind.PASS
    return Verdict(
        id=f"01J{len(trigger.part_id):04d}{trigger.part_id[-8:]}",
        station=trigger.station,
        part_id=trigger.part_id,
        verdict=kind,
        reason=NoVerdictReason.DEADLINE if late else None,
        detail="scratch seen" if failed else "no defect",
        defects=(Defect("scratch", 0.91, 1, 1, "cam1", "full"),) if failed else (),
        frames=(),
        triggered_at=trigger.received_at,
        decided_at=trigger.received_at + 0.05,
        source=trigger.source,
        model_id="model-7",
        model_sha1="abc",
    )


# ---- certificates (RSA keys are slow: made once per module) ----------------------------------------


@dataclass(frozen=True)
class ClientFiles:
    cert: Path
    key: Path

    def der(self) -> bytes:
        return self.cert.read_bytes()


def _client_files(directory: Path, name: str) -> ClientFiles:
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        name,
        {},
        [x509.UniformResourceIdentifier(CLIENT_URI), x509.DNSName(socket.gethostname())],
        extended=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    files = ClientFiles(directory / f"{name}.der", directory / f"{name}.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    files.key.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return files


@dataclass(frozen=True)
class Keys:
    trusted: ClientFiles
    stranger: ClientFiles
    server_own: Path  # a made server certificate + key, copied into each test's pki_dir


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("opcua-keys")
    own_certificate(directory / "pki")
    return Keys(
        _client_files(directory, "line-plc"), _client_files(directory, "stranger"), directory / "pki" / "own"
    )


@pytest.fixture
def pki(tmp_path: Path, keys: Keys) -> Path:
    pki = tmp_path / "pki"
    shutil.copytree(keys.server_own, pki / "own")
    (pki / "trusted").mkdir()
    shutil.copy(keys.trusted.cert, pki / "trusted" / "line-plc.der")
    return pki


# ---- servers and clients -----------------------------------------------------------------------------


def station(station_id: str) -> StationSettings:
    return StationSettings.model_validate(
        {"id": station_id, "cameras": ["cam1"], "defects": [{"tag": "scratch"}]}
    )


def opcua_settings(pki: Path, **overrides: Any) -> OpcUaSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "host": "127.0.0.1",
        "port": 0,
        "namespace": NS,
        "pki_dir": pki,
        "users": {USER: PASSWORD},
    }
    return OpcUaSettings.model_validate(values | overrides)


@dataclass
class Running:
    server: OpcUaServer
    service: FakeStations
    board: StatusBoard
    pki: Path

    @property
    def url(self) -> str:
        assert self.server.endpoint is not None
        return self.server.endpoint


@pytest.fixture
async def running(pki: Path) -> AsyncIterator[Running]:
    service = FakeStations(("st1",))
    board = StatusBoard()
    async with OpcUaServer(opcua_settings(pki), (station("st1"),), service, board) as server:
        yield Running(server, service, board, pki)


async def secure_client(
    url: str,
    files: ClientFiles,
    pki: Path,
    *,
    user: str | None = USER,
    password: str = PASSWORD,
    policy: Any = SecurityPolicyBasic256Sha256,
    mode: ua.MessageSecurityMode = ua.MessageSecurityMode.SignAndEncrypt,
) -> Client:
    client = Client(url, timeout=5)
    client.application_uri = CLIENT_URI
    if user is not None:
        client.set_user(user)
        client.set_password(password)
    await client.set_security(
        policy, str(files.cert), str(files.key), server_certificate=str(pki / "own" / "cert.der"), mode=mode
    )
    return client


async def ns_index(client: Client) -> int:
    return int(await client.get_namespace_index(NS))


def node(client: Client, idx: int, path: str) -> Any:
    return client.get_node(ua.NodeId(path, idx))


# ---- the address space, pushed values, Inspect ---------------------------------------------------


async def test_browse_read_subscribe_and_inspect(running: Running, keys: Keys) -> None:
    client = await secure_client(running.url, keys.trusted, running.pki)
    async with client:
        idx = await ns_index(client)
        # browse Objects/EdgeRuntime/Stations/st1 by browse names
        st1 = await client.nodes.objects.get_child([f"{idx}:EdgeRuntime", f"{idx}:Stations", f"{idx}:st1"])
        assert st1.nodeid == ua.NodeId("Stations/st1", idx)
        children = {(await c.read_browse_name()).Name for c in await st1.get_children()}
        assert children == {"LastResult", "Counters", "Health", "Inspect"}
        last = await st1.get_child(f"{idx}:LastResult")
        names = {(await c.read_browse_name()).Name for c in await last.get_children()}
        assert names == {
            "PartId", "Verdict", "Reason", "Detail", "Defects", "TriggeredAt", "DecidedAt", "ModelId",
            "ResultJson",
        }  # fmt: skip
        verdict = node(client, idx, "Stations/st1/LastResult/Verdict")
        assert await verdict.read_value() == ""
        assert await node(client, idx, "Stations/st1/Counters/Parts").read_value() == 0

        seen: asyncio.Queue[Any] = asyncio.Queue()

        class Handler:
            def datachange_notification(self, _node: Any, value: Any, _data: Any) -> None:
                seen.put_nowait(value)

        subscription = await client.create_subscription(20, Handler())
        await subscription.subscribe_data_change(verdict)
        assert await asyncio.wait_for(seen.get(), 5) == ""  # the initial value

        method = await st1.get_child(f"{idx}:Inspect")
        outputs = await st1.call_method(method, ua.Variant("bad-4711", ua.VariantType.String))
        assert outputs[0] == "fail" and outputs[1] == ""
        assert '"part_id":"bad-4711"' in outputs[2] and '"source":"opcua"' in outputs[2]
        assert await asyncio.wait_for(seen.get(), 5) == "fail"  # pushed, not polled

        assert await node(client, idx, "Stations/st1/LastResult/PartId").read_value() == "bad-4711"
        assert await node(client, idx, "Stations/st1/LastResult/Defects").read_value() == ["scratch"]
        assert await node(client, idx, "Stations/st1/LastResult/ModelId").read_value() == "model-7"
        decided = await node(client, idx, "Stations/st1/LastResult/DecidedAt").read_value()
        assert abs(decided.timestamp() - time.time()) < 30
        assert await node(client, idx, "Stations/st1/LastResult/ResultJson").read_value() == outputs[2]
        assert await node(client, idx, "Stations/st1/Counters/Fails").read_value() == 1
        assert running.service.triggers[0].source == "opcua"

        outputs = await st1.call_method(method, "good-1")
        assert outputs[0] == "pass"
        assert await asyncio.wait_for(seen.get(), 5) == "pass"
        outputs = await st1.call_method(method, "late-1")
        assert outputs[:2] == ["no_verdict", "deadline"]
        assert await asyncio.wait_for(seen.get(), 5) == "no_verdict"
        assert await node(client, idx, "Stations/st1/LastResult/Reason").read_value() == "deadline"
        parts = node(client, idx, "Stations/st1/Counters/Parts")
        assert await parts.read_value() == 3
        assert (await parts.read_data_type_as_variant_type()) == ua.VariantType.UInt64

        # read-only for clients
        with pytest.raises(ua.UaStatusCodeError):
            await verdict.write_value(ua.Variant("pass", ua.VariantType.String))


async def test_inspect_errors_and_a_caller_that_goes_away(running: Running, keys: Keys) -> None:
    client = await secure_client(running.url, keys.trusted, running.pki)
    async with client:
        idx = await ns_index(client)
        st1 = node(client, idx, "Stations/st1")
        method = ua.NodeId("Stations/st1/Inspect", idx)
        with pytest.raises(ua.uaerrors.BadInvalidArgument):
            await st1.call_method(method, "bad\nid")
        with pytest.raises(ua.uaerrors.BadInvalidArgument):
            await st1.call_method(method, "")
        with pytest.raises(ua.uaerrors.BadTypeMismatch):
            await st1.call_method(method, ua.Variant(4711, ua.VariantType.Int32))
        running.service.accepting = False
        with pytest.raises(ua.uaerrors.BadShutdown):
            await st1.call_method(method, "p1")
    assert running.service.triggers == []

    # a caller that goes away (its connection dropped) must not cancel the part's inspection
    running.service.accepting, running.service.hold = True, True
    call = asyncio.create_task(running.server._inspect("st1", (ua.Variant("p9", ua.VariantType.String),)))
    await eventually(lambda: running.service.futures, what="the trigger")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    (future,) = running.service.futures
    assert not future.cancelled()


async def test_health_follows_the_board(running: Running, keys: Keys) -> None:
    client = await secure_client(running.url, keys.trusted, running.pki)
    async with client:
        idx = await ns_index(client)
        cameras = node(client, idx, "Stations/st1/Health/CameraState")
        ready = node(client, idx, "Stations/st1/Health/ModelReady")
        assert await cameras.read_value() == "cam1=unknown"
        assert await ready.read_value() is False
        running.board.put(
            "camera/cam1", CameraStatus("cam1", "rtsp://cam1", CameraState.STREAMING, 1, 0, 0, 0, None, None)
        )
        running.board.put(
            "model", ModelStatus(LoadState.READY, serving=Serving("model-7", "abc", "CUDAExecutionProvider"))
        )

        async def shown() -> tuple[Any, ...]:
            return (
                await cameras.read_value(),
                await ready.read_value(),
                await node(client, idx, "Stations/st1/Health/Device").read_value(),
            )

        deadline = time.monotonic() + 5
        while (values := await shown()) != ("cam1=streaming", True, "CUDAExecutionProvider"):
            assert time.monotonic() < deadline, values
            await asyncio.sleep(0.02)


# ---- who may connect ---------------------------------------------------------------------------------


async def test_wrong_password_unknown_user_and_anonymous_are_refused(running: Running, keys: Keys) -> None:
    for user, password in ((USER, "wrong"), ("nobody", PASSWORD)):
        client = await secure_client(running.url, keys.trusted, running.pki, user=user, password=password)
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await client.connect()
        await client.disconnect()
    client = await secure_client(running.url, keys.trusted, running.pki, user=None)
    with pytest.raises(ua.uaerrors.BadIdentityTokenRejected):  # no anonymous token is offered
        await client.connect()
    await client.disconnect()


async def test_anonymous_and_unsecured_sessions_only_when_allowed(
    pki: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, board = FakeStations(("st1",)), StatusBoard()
    settings = opcua_settings(pki, users={}, allow_anonymous=True)
    async with OpcUaServer(settings, (station("st1"),), service, board) as server:
        assert server.endpoint is not None
        async with await secure_client(server.endpoint, keys.trusted, pki, user=None) as client:
            assert (
                await node(client, await ns_index(client), "Stations/st1/LastResult/Verdict").read_value()
                == ""
            )
        client = Client(server.endpoint, timeout=5)
        endpoints = await client.connect_and_get_server_endpoints()  # discovery stays open
        assert {e.SecurityMode for e in endpoints} == {
            ua.MessageSecurityMode.Sign,
            ua.MessageSecurityMode.SignAndEncrypt,
        }
        # asyncua's server opens an unsecured channel for discovery and would create a session on it:
        # a client that skips its own endpoint check must still be refused when activating
        monkeypatch.setattr(Client, "find_endpoint", staticmethod(lambda endpoints, mode, uri: endpoints[0]))
        client = Client(server.endpoint, timeout=5)
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await client.connect()
        await client.disconnect()
        monkeypatch.undo()
    settings = opcua_settings(pki, users={}, allow_anonymous=True, allow_unencrypted=True)
    async with OpcUaServer(settings, (station("st1"),), service, board) as server:
        assert server.endpoint is not None
        async with Client(server.endpoint, timeout=5) as client:
            assert await node(client, await ns_index(client), "Stations/st1/Counters/Parts").read_value() == 0


async def test_untrusted_client_certificate_is_refused_until_moved_to_trusted(
    running: Running, keys: Keys
) -> None:
    client = await secure_client(running.url, keys.stranger, running.pki)
    with pytest.raises(ua.uaerrors.BadCertificateUntrusted):
        await client.connect()
    await client.disconnect()
    (rejected,) = (running.pki / "rejected").iterdir()
    assert rejected.read_bytes() == keys.stranger.der()
    rejected.rename(running.pki / "trusted" / rejected.name)  # what the operator does: no restart
    client = await secure_client(
        running.url,
        keys.stranger,
        running.pki,
        policy=SecurityPolicyAes256Sha256RsaPss,
        mode=ua.MessageSecurityMode.Sign,
    )
    async with client:
        assert await node(client, await ns_index(client), "Stations/st1/Counters/Parts").read_value() == 0


async def test_any_client_certificate_when_configured(pki: Path, keys: Keys) -> None:
    settings = opcua_settings(pki, trust_any_client_certificate=True)
    async with OpcUaServer(settings, (station("st1"),), FakeStations(("st1",)), StatusBoard()) as server:
        assert server.endpoint is not None
        async with await secure_client(server.endpoint, keys.stranger, pki) as client:
            assert await node(client, await ns_index(client), "Stations/st1/Counters/Parts").read_value() == 0


# ---- lifecycle ------------------------------------------------------------------------------------------


async def test_certificate_is_made_once_and_kept_across_restarts(tmp_path: Path, keys: Keys) -> None:
    pki = tmp_path / "fresh-pki"
    server = OpcUaServer(opcua_settings(pki), (station("st1"),), FakeStations(("st1",)), StatusBoard())
    async with server:
        first = (pki / "own" / "cert.der").read_bytes()
        assert (pki / "own" / "key.pem").stat().st_mode & 0o777 == 0o600
        # a settings change restarts the server with the same certificate
        changes = await server.apply(
            OpcUaConfig(opcua_settings(pki, namespace="urn:test:other"), (station("st1"),))
        )
        assert changes == ["opcua"]
        assert (pki / "own" / "cert.der").read_bytes() == first
        shutil.copy(keys.trusted.cert, pki / "trusted")
        async with await secure_client(server.endpoint or "", keys.trusted, pki) as client:
            assert await client.get_namespace_index("urn:test:other") > 0
    assert server.endpoint is None
    async with OpcUaServer(opcua_settings(pki), (station("st1"),), FakeStations(("st1",)), StatusBoard()):
        assert (pki / "own" / "cert.der").read_bytes() == first


async def test_stations_added_and_removed_live(running: Running, keys: Keys) -> None:
    async with await secure_client(running.url, keys.trusted, running.pki) as client:
        idx = await ns_index(client)
        folder = node(client, idx, "Stations")
        changes = await running.server.apply(
            OpcUaConfig(opcua_settings(running.pki), (station("st1"), station("st2")))
        )
        assert changes == ["opcua station st2 added"]
        assert {(await c.read_browse_name()).Name for c in await folder.get_children()} == {"st1", "st2"}
        st2 = node(client, idx, "Stations/st2")
        assert (await st2.call_method(ua.NodeId("Stations/st2/Inspect", idx), "bad-2"))[0] == "fail"
        verdict = node(client, idx, "Stations/st2/LastResult/Verdict")
        deadline = time.monotonic() + 5
        while await verdict.read_value() != "fail":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)

        changes = await running.server.apply(OpcUaConfig(opcua_settings(running.pki), (station("st2"),)))
        assert changes == ["opcua station st1 removed"]
        assert {(await c.read_browse_name()).Name for c in await folder.get_children()} == {"st2"}
        with pytest.raises(ua.uaerrors.BadNodeIdUnknown):
            await node(client, idx, "Stations/st1/LastResult/Verdict").read_value()
        assert running.server.endpoint == running.url  # no restart


async def test_disabled_server_does_nothing(tmp_path: Path) -> None:
    settings = OpcUaSettings(pki_dir=tmp_path / "pki")
    async with OpcUaServer(settings, (station("st1"),), FakeStations(("st1",)), StatusBoard()) as server:
        assert server.endpoint is None
        assert await server.apply(OpcUaConfig(settings, (station("st1"), station("st2")))) == []
    assert not (tmp_path / "pki").exists()
