"""The settings model, and the one way to it: YAML file < environment < command line -> one frozen
Settings tree (how files and secret files are read: config_files.py).

Environment variables: `EDGE_RUNTIME_<SECTION>__<FIELD>`, e.g. `EDGE_RUNTIME_SERVER__PORT=8080`,
`EDGE_RUNTIME_MODEL__PATH=/models/export.zip`; `EDGE_RUNTIME_CONFIG` names the YAML file.
Lists may be given as JSON (`EDGE_RUNTIME_URL_FETCH__ALLOW='["10.0.0.0/8"]'`) or comma-separated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edge_runtime.config_files import read_config_file, resolve_secret_files
from edge_runtime.errors import ConfigError
from edge_runtime.model.limits import (
    DEFAULT_FORMATS,
    DEFAULT_MAX_JPEG_SCANS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_RESIZED_PIXELS,
)
from edge_runtime.model.spec import Fidelity, Postprocess, Resize
from edge_runtime.sources.decoding import DecodeMode, HwAccel, ReaderKind

ENV_PREFIX = "EDGE_RUNTIME_"
CONFIG_ENV = "EDGE_RUNTIME_CONFIG"
# Set by the IoT Edge runtime (or by the dev tools' fallback): their presence means "we run as a module".
IOT_EDGE_ENV = ("IOTEDGE_MODULEID", "EdgeHubConnectionString")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelSettings(_Section):
    path: Path | None = Field(None, description="export folder or .zip; none = the built-in demo model")
    device: str = Field("auto", description="auto | cpu | cuda | openvino[:CPU|GPU|NPU|AUTO]")
    allow_fallback: bool = Field(
        False, description="use the auto choice when the requested device is missing"
    )
    threads: int = Field(0, ge=0, description="backend threads per inference; 0 = 1 per worker when serving")
    resize: Resize | None = Field(None, description="override the preprocessing recipe")
    fidelity: Fidelity = Field(
        Fidelity.EXACT,
        description="exact: the recipe bit for bit; fast: reduced-scale JPEG decode and OpenCV resizing"
        " (probabilities shift a little: measured in benchmarks/RESULTS.md)",
    )
    layout: Postprocess | None = Field(
        None,
        description="the output layout where the model's files and shapes leave a choice: "
        "logits-multiclass | logits-multilabel (AutoML classifiers without settings.json), "
        "objectness | anchor-free | end-to-end | detr (detectors that fit several)",
    )
    score_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="drop detections (AutoML multi-label labels) scoring less; none: the model's",
    )
    iou_threshold: float | None = Field(
        None, ge=0, le=1, description="NMS overlap for the detectors decoded here; none = the model's"
    )
    max_detections: int | None = Field(
        None, ge=1, description="most detections per picture; none: the model's"
    )
    verify_sha1: bool = Field(True, description="check ModelFileSHA1 from cvexport.manifest")
    url: SecretStr | None = Field(
        None, description="https URL of an export .zip to download (e.g. a blob SAS URL); needs sha256"
    )
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$", description="of the file at url")
    download_dir: Path = Field(Path("var/models"), description="where downloaded models are kept")
    max_download_bytes: int = Field(512 * 1024 * 1024, gt=0)
    download_ca_file: Path | None = Field(None, description="extra CA to trust for url (private servers)")
    download_timeout_s: float = Field(600.0, gt=0)

    @model_validator(mode="after")
    def _url_needs_hash(self) -> ModelSettings:
        if self.url is not None and self.sha256 is None:
            raise ValueError("model.url needs model.sha256: a downloaded model is always verified")
        return self

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        from edge_runtime.backends.providers import parse_device

        parse_device(value)  # raises ConfigError with the accepted forms
        return value


MIN_KEY_LENGTH = 12


def long_key(value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
    """The admin and viewer keys: long enough that guessing them is hopeless."""
    if value is not None and len(value.get_secret_value()) < MIN_KEY_LENGTH:
        raise ValueError(f"{info.field_name} must be at least {MIN_KEY_LENGTH} characters long")
    return value


class ServerSettings(_Section):
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535, description="the module image sets 80, the container's port")
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0, description="413 above this (the container's 4 MiB)")
    max_image_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0, description="400 above this many pixels (bombs)")
    max_resized_pixels: int = Field(
        DEFAULT_MAX_RESIZED_PIXELS,
        gt=0,
        description="400 when the recipe's resize would make more pixels (thin images)",
    )
    max_jpeg_scans: int = Field(
        DEFAULT_MAX_JPEG_SCANS,
        gt=0,
        description="400 for JPEGs with more scans (progressive scan bombs); decode-time bound",
    )
    image_formats: tuple[str, ...] = Field(
        DEFAULT_FORMATS,
        description="decoders an uploaded image may use (PIL names; TIFF possible); others get 400",
    )
    body_timeout_s: float = Field(60.0, gt=0, description="408 when a request body takes longer")
    body_idle_timeout_s: float = Field(10.0, gt=0, description="408 when a body sends nothing this long")
    max_body_buffer_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="request bodies held at once, all clients; 503 above"
    )
    inference_workers: int = Field(0, ge=0, description="inference threads; 0 = one per CPU core")
    max_inflight: int = Field(0, ge=0, description="requests in inference at once; 0 = 4 per worker")
    batch_window_ms: float = Field(
        0.0,
        ge=0,
        le=100,
        description="micro-batching: wait up to this long to run same-shape inputs as one batch; 0 = off",
    )
    max_batch: int = Field(8, ge=1, le=256, description="inputs per micro-batch at most")
    admission_wait_s: float = Field(
        1.0, ge=0, description="how long a request waits for a free slot before 503 (429 on cloud paths)"
    )
    prediction_key: SecretStr | None = Field(None, description="require this Prediction-Key header")
    protect_health: bool = False
    protect_metrics: bool = False
    shutdown_timeout_s: float = Field(5.0, gt=0)
    admin_key: SecretStr | None = Field(
        None, description="enables /admin/* (config patch, model reload) for 'Authorization: Bearer <key>'"
    )
    public_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s?#]+$",
        description="how others reach this server; events link snapshots",
    )
    response_id: str = ""
    response_project: str = ""
    response_iteration: str = ""

    _long_key = field_validator("admin_key")(long_key)

    @field_validator("image_formats", mode="before")
    @classmethod
    def _formats(cls, value: Any) -> Any:
        from PIL import Image

        names = tuple(str(name).upper() for name in _as_list(value))
        Image.init()
        unknown = [name for name in names if name not in Image.OPEN]
        if unknown or not names:
            raise ValueError(f"unknown image formats {unknown}; PIL knows {sorted(Image.OPEN)}")
        return names


class UiSettings(_Section):
    enabled: bool = Field(True, description="the operator page at /ui/ and its APIs under /ui/api/")
    viewer_key: SecretStr | None = Field(
        None, description="lets people log in to watch (cameras, events, test); the admin key also edits"
    )
    open_on_loopback: bool = Field(
        True,
        description="clients on 127.0.0.1/::1 may watch without a key (a reverse proxy on the box is one!)",
    )
    live_fps: float = Field(2.0, gt=0, le=10, description="camera view refreshes per second, at most")
    max_live_clients: int = Field(16, ge=1, description="live connections (SSE) at once; 503 above")
    session_ttl_s: float = Field(12 * 3600.0, gt=0, description="a login lasts this long")

    _long_key = field_validator("viewer_key")(long_key)


class UrlFetchSettings(_Section):
    allow: tuple[str, ...] = Field((), description="hosts or CIDRs /url may reach even if private/loopback")
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(10.0, gt=0)
    max_redirects: int = Field(3, ge=0)

    @field_validator("allow", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _as_list(value)


class RoiSettings(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    x: float = Field(ge=0, lt=1)
    y: float = Field(ge=0, lt=1)
    width: float = Field(gt=0, le=1)
    height: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _inside(self) -> RoiSettings:
        if self.x + self.width > 1.0 + 1e-9 or self.y + self.height > 1.0 + 1e-9:
            raise ValueError(f"ROI {self.name!r} reaches outside the frame")
        return self


class RuleSettings(_Section):
    """When predictions of a tag become a defect event (see README, Rules and events)."""

    tag: str = Field("*", description="a label, or * for every label without its own rule")
    min_probability: float = Field(0.5, ge=0, le=1)
    min_box_area: float = Field(0.0, ge=0, le=1, description="detection: smallest box, fraction of the frame")
    k: int = Field(2, ge=1, description="a defect needs k hits ...")
    n: int = Field(3, ge=1, description="... among the last n sampled frames")
    clear_after: int = Field(3, ge=1, description="clean frames in a row that end an episode")
    emit_ended: bool = True
    cooldown_s: float = Field(10.0, ge=0, description="no new 'started' sooner than this after the last one")

    @model_validator(mode="after")
    def _k_of_n(self) -> RuleSettings:
        if self.k > self.n:
            raise ValueError(f"rule for {self.tag!r}: k ({self.k}) must not exceed n ({self.n})")
        return self


class CameraSettings(_Section):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    url: str = Field(description="rtsp://..., a local video file (loops), or synthetic://conveyor")
    detect_url: str | None = Field(
        None, description="a lower-resolution stream (substream) for inference; `url` then serves snapshots"
    )
    fps: float = Field(2.0, gt=0, le=60, description="sampling rate for inference")
    decode: DecodeMode = Field(
        DecodeMode.AUTO, description="auto: keyframes only when 1/fps >= the stream's keyframe interval"
    )
    hwaccel: HwAccel = Field(HwAccel.AUTO, description="video decoder: auto, none, cuda, qsv, vaapi, v4l2m2m")
    hwaccel_fallback: bool = Field(False, description="decode in software when the named hwaccel is missing")
    reader: ReaderKind = Field(ReaderKind.PYAV, description="pyav; opencv: the pre-0.2 reader (every frame)")
    rois: tuple[RoiSettings, ...] = ()
    # No rules, no events: an implicit catch-all would alarm on the OK class too.
    rules: tuple[RuleSettings, ...] = ()
    open_timeout_s: float = Field(5.0, gt=0)
    stall_timeout_s: float = Field(5.0, gt=0, description="no frame for this long -> stalled, reopen")
    backoff_initial_s: float = Field(0.5, gt=0, description="first reopen delay; doubles per failure")
    backoff_max_s: float = Field(30.0, gt=0, description="longest reopen delay (x0.8..1.2 jitter)")
    sample: bool = Field(True, description="infer at fps; false = only when a station is triggered")
    enabled: bool = True

    @field_validator("rois", mode="before")
    @classmethod
    def _rois(cls, value: Any) -> Any:
        return _keyed(value, "name")

    @field_validator("rules", mode="before")
    @classmethod
    def _rules(cls, value: Any) -> Any:
        return _keyed(value, "tag")

    @field_validator("url", "detect_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("camera url is empty")
        return value

    @model_validator(mode="after")
    def _reader_controls(self) -> CameraSettings:
        legacy = self.reader is ReaderKind.OPENCV
        if legacy and (
            self.decode is DecodeMode.KEYFRAMES or self.hwaccel not in (HwAccel.AUTO, HwAccel.NONE)
        ):
            raise ValueError(
                f"camera {self.id!r}: reader: opencv decodes every frame in software;"
                " decode and hwaccel need reader: pyav"
            )
        return self

    @property
    def inspect_url(self) -> str:
        """The stream the sampler inspects: detect_url when given, else url."""
        return self.detect_url or self.url

    @model_validator(mode="after")
    def _backoff_range(self) -> CameraSettings:
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError(
                f"camera {self.id!r}: backoff_initial_s ({self.backoff_initial_s:g}) must not exceed"
                f" backoff_max_s ({self.backoff_max_s:g})"
            )
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> CameraSettings:
        for kind, names in (
            ("rule tags", [r.tag for r in self.rules]),
            ("ROI names", [r.name for r in self.rois]),
        ):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"camera {self.id!r}: {kind} must be unique: {duplicates}")
        return self


class DefectSettings(_Section):
    """What makes a part fail at a station (a station's verdict is `fail` when any of these holds)."""

    tag: str = Field(min_length=1, description="a label of the model")
    min_probability: float = Field(0.5, ge=0, le=1)
    min_box_area: float = Field(0.0, ge=0, le=1, description="detection: smallest box, fraction of the frame")
    votes: int = Field(
        1, ge=1, description="inspected frames (of all the station's cameras) that must show it"
    )
    rois: tuple[str, ...] = Field((), description="only these ROIs count; empty = every ROI")
    cameras: tuple[str, ...] = Field((), description="only these cameras count; empty = every camera")


class StationSettings(_Section):
    """A place on the line where a trigger names a part and the station's cameras judge it."""

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    cameras: tuple[str, ...] = Field(min_length=1, description="ids of configured cameras")
    rois: tuple[RoiSettings, ...] = Field((), description="empty = each camera's ROIs (or its whole frame)")
    defects: tuple[DefectSettings, ...] = Field(min_length=1)
    frames: int = Field(1, ge=1, le=50, description="frames inspected per camera for each part")
    min_interval_ms: float = Field(0.0, ge=0, description="between a camera's inspected frames")
    clock_margin_ms: float = Field(
        100.0,
        ge=0,
        le=10_000,
        description="a frame not timed by the camera's RTCP clock must be captured this much after the"
        " trigger (pts and arrival times run late by the stream's latency)",
    )
    deadline_ms: float = Field(
        2000.0, gt=0, le=600_000, description="no verdict by then: no_verdict/deadline"
    )
    max_pending: int = Field(256, ge=1, description="parts in inspection at once; above: no_verdict/busy")
    enabled: bool = True

    @field_validator("rois", mode="before")
    @classmethod
    def _rois(cls, value: Any) -> Any:
        return _keyed(value, "name")

    @model_validator(mode="after")
    def _consistent(self) -> StationSettings:
        seen = len(self.cameras) * self.frames
        for defect in self.defects:
            if defect.votes > seen:
                raise ValueError(
                    f"station {self.id!r}: defect {defect.tag!r} needs {defect.votes} votes but a part is"
                    f" seen in only {seen} frames (frames x cameras)"
                )
            unknown = sorted(set(defect.cameras) - set(self.cameras))
            if unknown:
                raise ValueError(
                    f"station {self.id!r}: defect {defect.tag!r} names cameras {unknown} it does not use"
                )
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"station {self.id!r}: a camera is listed twice")
        return self


class TriggerSettings(_Section):
    """Where part triggers come from besides POST /stations/<id>/trigger (always on when stations exist)."""

    key: SecretStr | None = Field(
        None, description="require `Authorization: Bearer <key>` on the HTTP trigger routes"
    )
    mqtt: bool = Field(
        False, description="subscribe to <topic_prefix>/stations/+/trigger on sinks.mqtt's broker"
    )
    remember_parts: int = Field(10_000, ge=1, description="recent part ids whose verdict a repeat gets back")


class OpcUaSettings(_Section):
    """The OPC UA server for PLCs and MES: an object per station, the Inspect(partId) method."""

    enabled: bool = False
    host: str = "0.0.0.0"
    port: int = Field(4840, ge=0, le=65535, description="0 = any free port (tests)")
    namespace: str = Field("urn:edge-runtime:stations", min_length=1)
    pki_dir: Path = Field(
        Path("var/opcua"),
        description="own certificate and key (made at first start, kept); trusted/ client certs",
    )
    users: dict[str, SecretStr] = Field({}, description="user name -> password")
    allow_anonymous: bool = Field(False, description="sessions without a user; off unless asked for")
    allow_unencrypted: bool = Field(
        False, description="offer the None security policy (no signing, no encryption)"
    )
    trust_any_client_certificate: bool = Field(
        False, description="accept any client certificate, not only those in pki_dir/trusted"
    )

    @field_validator("users", mode="before")
    @classmethod
    def _users(cls, value: Any) -> Any:
        # From the environment: EDGE_RUNTIME_OPCUA__USERS='{"line3-plc": "..."}'
        return json.loads(value) if isinstance(value, str) and value.strip().startswith("{") else value

    @model_validator(mode="after")
    def _someone_can_log_in(self) -> OpcUaSettings:
        if self.enabled and not self.users and not self.allow_anonymous:
            raise ValueError("opcua: no way in: set opcua.users, or allow_anonymous: true")
        return self


class EventSettings(_Section):
    jsonl_path: Path | None = Field(Path("var/events.jsonl"), description="JSON-lines sink; null = off")
    snapshot_dir: Path | None = Field(Path("var/snapshots"), description="null = no snapshots")
    snapshot_max_count: int = Field(500, ge=1)
    snapshot_max_bytes: int = Field(200 * 1024 * 1024, ge=1)
    outbox_path: Path = Field(Path("var/outbox.sqlite3"), description="durable store-and-forward queue")
    outbox_max_events: int = Field(
        100_000, ge=1, description="per sink; the oldest is dropped (counted) above"
    )
    outbox_max_age_s: float = Field(7 * 24 * 3600.0, gt=0, description="older undelivered events are dropped")
    history_path: Path | None = Field(
        Path("var/history.sqlite3"), description="the event history the operator page queries; null = off"
    )
    history_max_events: int = Field(100_000, ge=1, description="the newest kept; older ones are pruned")
    history_max_age_s: float = Field(30 * 24 * 3600.0, gt=0, description="older events are pruned")


class DeliverySettings(_Section):
    """What every network sink shares: how much it may send (IoT Hub messages cost money)."""

    send_events: bool = Field(True, description="false = only the periodic summary goes out")
    rate_limit_per_minute: float = Field(0.0, ge=0, description="0 = unlimited; over it, events wait")
    summary_interval_s: float = Field(0.0, ge=0, description="0 = off; counts per camera and tag")
    publish_timeout_s: float = Field(10.0, gt=0, description="no confirmation by then = retry later")


class TlsSettings(_Section):
    ca_file: Path | None = Field(None, description="CA bundle to verify the broker; none = system CAs")
    cert_file: Path | None = Field(None, description="client certificate (mutual TLS)")
    key_file: Path | None = None
    insecure: bool = Field(False, description="skip host name verification (testing only)")


# Reconnecting more often than this buys nothing and, below 1 s, once made paho spin (see sinks/mqtt.py).
MQTT_RECONNECT_FLOOR_S = 0.5


class MqttSettings(DeliverySettings):
    host: str = Field(min_length=1)
    port: int = Field(0, ge=0, le=65535, description="0 = 1883, or 8883 with TLS")
    tls: TlsSettings | None = None
    username: str | None = None
    password: SecretStr | None = None
    client_id: str = Field("", description="empty = edge-runtime-<hostname>")
    qos: int = Field(1, ge=0, le=2)
    keepalive_s: int = Field(30, ge=5)
    topic_prefix: str = Field("edge_runtime", pattern=r"^[^#+]+$")
    publish_snapshots: bool = Field(False, description="also send the JPEG to <prefix>/<camera>/snapshot")
    reconnect_min_s: float = Field(
        1.0, ge=MQTT_RECONNECT_FLOOR_S, description="first wait before reconnecting; doubles each failure"
    )
    reconnect_max_s: float = Field(
        30.0, ge=MQTT_RECONNECT_FLOOR_S, description="longest wait between reconnect attempts"
    )

    @model_validator(mode="after")
    def _reconnect_range(self) -> MqttSettings:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(
                f"reconnect_max_s ({self.reconnect_max_s:g}) must not be below"
                f" reconnect_min_s ({self.reconnect_min_s:g})"
            )
        return self

    @property
    def effective_port(self) -> int:
        return self.port or (8883 if self.tls is not None else 1883)


class HubSettings(_Section):
    """The connection to IoT Hub / edgeHub, shared by the iothub sink, the module twin and direct methods."""

    enabled: bool | None = Field(None, description="none = on when the IoT Edge environment is detected")
    connection_string: SecretStr | None = Field(
        None, description="module connection string; none = the IoT Edge environment (IOTEDGE_* variables)"
    )
    ca_file: Path | None = Field(None, description="CA of GatewayHostName for a connection string")
    connect_retry_max_s: float = Field(30.0, gt=0)
    twin: bool = Field(True, description="apply the module twin's desired properties; answer direct methods")


class IotHubSettings(DeliverySettings):
    output: str = Field("defects", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="module output name")


SINK_NAMES = ("mqtt", "iothub")


class SinkSettings(_Section):
    mqtt: MqttSettings | None = None
    iothub: IotHubSettings | None = None

    @model_validator(mode="before")
    @classmethod
    def _known(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(SINK_NAMES))
            if unknown:
                raise ValueError(f"unknown sink {unknown[0]!r} (known: {', '.join(SINK_NAMES)})")
        return data


class Settings(_Section):
    model: ModelSettings = ModelSettings()
    server: ServerSettings = ServerSettings()
    ui: UiSettings = UiSettings()
    url_fetch: UrlFetchSettings = UrlFetchSettings()
    cameras: tuple[CameraSettings, ...] = ()
    events: EventSettings = EventSettings()
    sinks: SinkSettings = SinkSettings()
    hub: HubSettings = HubSettings()
    stations: tuple[StationSettings, ...] = ()
    triggers: TriggerSettings = TriggerSettings()
    opcua: OpcUaSettings = OpcUaSettings()
    log_level: str = "INFO"

    @field_validator("cameras", "stations", mode="before")
    @classmethod
    def _cameras(cls, value: Any) -> Any:
        return _keyed(value, "id")

    @model_validator(mode="after")
    def _unique_cameras(self) -> Settings:
        ids = [c.id for c in self.cameras]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"camera ids must be unique: {duplicates}")
        if self.sinks.iothub is not None and not self.hub_enabled:
            raise ValueError(
                "sinks.iothub needs hub.connection_string, or the IoT Edge environment (IOTEDGE_* variables)"
            )
        return self

    @model_validator(mode="after")
    def _stations_fit(self) -> Settings:
        ids = [s.id for s in self.stations]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"station ids must be unique: {duplicates}")
        cameras = {c.id: c for c in self.cameras if c.enabled}
        for station in self.stations:
            for camera_id in station.cameras if station.enabled else ():
                camera = cameras.get(camera_id)
                if camera is None:
                    raise ValueError(f"station {station.id!r}: camera {camera_id!r} is not an enabled camera")
                if camera.decode is not DecodeMode.ALL:
                    # keyframes only would make a trigger wait up to a keyframe interval for its frame
                    raise ValueError(
                        f"station {station.id!r}: camera {camera_id!r} must decode every frame (decode: all)"
                    )
                names = {r.name for r in camera.rois} | {r.name for r in station.rois} | {"full"}
                for defect in station.defects:
                    unknown = sorted(set(defect.rois) - names)
                    if unknown:
                        raise ValueError(
                            f"station {station.id!r}: defect {defect.tag!r} names unknown ROIs {unknown}"
                        )
        if self.triggers.mqtt and self.sinks.mqtt is None:
            raise ValueError("triggers.mqtt needs sinks.mqtt (the broker it subscribes on)")
        return self

    @property
    def hub_enabled(self) -> bool:
        return bool(self.hub.enabled) or (self.hub.enabled is None and self.hub.connection_string is not None)


def _keyed(value: Any, key: str) -> Any:
    """Accept {key: {...}} as well as a list: module twins merge objects, and null removes an entry."""
    if isinstance(value, Mapping):
        items = []
        for name, body in value.items():
            if body is None:
                continue
            if not isinstance(body, Mapping):
                raise ValueError(f"{name!r}: expected an object")
            items.append({**body, key: name})
        return items
    return value


def _as_list(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def merge_tree(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`extra` over `base`: objects merge key by key; anything else (null too) replaces."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_tree(out[key], value)
        else:
            out[key] = value
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return tree


def describe_validation_error(exc: ValidationError, data: Mapping[str, Any] | None = None) -> str:
    parts = []
    ids = {key: _camera_ids(data.get(key)) if data else [] for key in ("cameras", "stations")}
    for err in exc.errors():
        loc = list(err["loc"])
        # cameras.3.fps -> cameras.<id>.fps: an index means nothing when cameras came as a mapping
        by_id = len(loc) > 2 and loc[2] != "id"  # a bad id itself keeps its index
        known = ids.get(str(loc[0])) if loc else None
        if by_id and known and isinstance(loc[1], int) and loc[1] < len(known):
            loc[1] = known[loc[1]]
        where = ".".join(str(p) for p in loc) or "(top level)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def _camera_ids(cameras: Any) -> list[str]:
    if isinstance(cameras, Mapping):
        return [str(k) for k, v in cameras.items() if v is not None]
    if isinstance(cameras, list | tuple):
        return [str(c.get("id", i)) if isinstance(c, Mapping) else str(i) for i, c in enumerate(cameras)]
    return []


def rule_tag_problem(settings: Settings, labels: Sequence[str]) -> str | None:
    """A rule naming a tag the model does not have would never fire: say so, with the labels."""
    for camera in settings.cameras:
        for rule in camera.rules if camera.enabled else ():
            if rule.tag != "*" and rule.tag not in labels:
                return (
                    f"camera {camera.id!r}: rule tag {rule.tag!r} is not one of the model's labels "
                    f"({', '.join(labels)})"
                )
    for station in settings.stations:
        for defect in station.defects if station.enabled else ():
            if defect.tag not in labels:
                return (
                    f"station {station.id!r}: defect tag {defect.tag!r} is not one of the model's labels "
                    f"({', '.join(labels)})"
                )
    return None


def build_settings(data: Mapping[str, Any]) -> Settings:
    try:
        data = resolve_secret_files(data)
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {describe_validation_error(exc, data)}") from exc
    except ConfigError as exc:
        raise ConfigError(f"invalid settings: {exc}") from exc


def load_settings(
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults < YAML file < environment < overrides (the command line)."""
    env = os.environ if env is None else env
    file_name = config_file or (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)
    data: dict[str, Any] = read_config_file(file_name) if file_name else {}
    data = merge_tree(data, _from_env(env))
    data = merge_tree(data, overrides or {})
    hub = data.get("hub")
    if (hub.get("enabled") if isinstance(hub, dict) else None) is None and any(
        env.get(name) for name in IOT_EDGE_ENV
    ):
        data = merge_tree(data, {"hub": {"enabled": True}})
    return build_settings(data)
