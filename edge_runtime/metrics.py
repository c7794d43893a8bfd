"""Every Prometheus metric, declared once (base units, `_total` counters, histograms for latency)."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

from edge_runtime.domain import StageTimings

# 0.5 ms .. 10 s: inference on an edge CPU sits around 3-50 ms, a 4K decode can take 100 ms+.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

HTTP_REQUESTS = Counter(
    "edge_runtime_http_requests_total", "HTTP requests answered", ["route", "method", "status"]
)
HTTP_INFLIGHT = Gauge(
    "edge_runtime_http_inflight_requests", "Prediction requests admitted and not yet answered"
)
HTTP_REQUEST_SECONDS = Histogram(
    "edge_runtime_http_request_seconds",
    "Wall time of prediction requests, body read to response",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "edge_runtime_stage_seconds",
    "Time per prediction stage: decode, preprocess, inference, postprocess, total",
    ["source", "stage"],
    buckets=LATENCY_BUCKETS,
)
PREDICTIONS = Counter("edge_runtime_predictions_total", "Images predicted", ["source"])
MODEL_INFO = Gauge(
    "edge_runtime_model_info",
    "The model being served (value 1) and the device it runs on",
    ["model_id", "sha1", "task", "domain", "device", "fallback_from"],
)
MODEL_READY = Gauge("edge_runtime_model_ready", "1 when the model is loaded and warmed up")
MODEL_LOADS = Counter(
    "edge_runtime_model_loads_total",
    "Model loads settled: ready (swapped in, serving) or failed (the previous model, if any, keeps serving)",
    ["outcome"],
)
for _outcome in ("ready", "failed"):  # both series from the start: increase() sees the first load
    MODEL_LOADS.labels(_outcome)


def observe_prediction(source: str, timings: StageTimings) -> None:
    PREDICTIONS.labels(source).inc()
    STAGE_SECONDS.labels(source, "decode").observe(timings.decode)
    STAGE_SECONDS.labels(source, "preprocess").observe(timings.preprocess)
    STAGE_SECONDS.labels(source, "inference").observe(timings.inference)
    STAGE_SECONDS.labels(source, "postprocess").observe(timings.postprocess)
    STAGE_SECONDS.labels(source, "total").observe(timings.total)


# --- cameras and events --------------------------------------------------------------------------
FRAME_AGE_BUCKETS = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)

CAMERA_STATE = Gauge("edge_runtime_camera_state", "1 for the camera's current state", ["camera", "state"])
CAMERA_FRAMES = Counter("edge_runtime_camera_frames_total", "Frames read from the camera", ["camera"])
CAMERA_FRAMES_DROPPED = Counter(
    "edge_runtime_camera_frames_dropped_total", "Frames replaced by a newer one before sampling", ["camera"]
)
CAMERA_RECONNECTS = Counter("edge_runtime_camera_reconnects_total", "Stream reopen attempts", ["camera"])
CAMERA_STALLS = Counter(
    "edge_runtime_camera_stalls_total", "Times the watchdog found no fresh frame", ["camera"]
)
CAMERA_FAILURES = Counter(
    "edge_runtime_camera_failures_total",
    "Stream failures by reason: open_failed, stream_ended (the source closed it: a server crash),"
    " stalled (no frame within stall_timeout_s); each is followed by a reopen",
    ["camera", "reason"],
)
CAMERA_SAMPLING_PERIOD = Gauge(
    "edge_runtime_camera_sampling_period_seconds",
    "The camera's configured sampling period for inference (1/fps)",
    ["camera"],
)
CAMERA_SAMPLING_OVERRUNS = Counter(
    "edge_runtime_camera_sampling_overruns_total",
    "Sampling ticks that came late because the previous frame's inference took longer than 1/fps",
    ["camera"],
)
FRAME_AGE_SECONDS = Histogram(
    "edge_runtime_frame_age_seconds",
    "Capture-to-inference age of sampled frames",
    ["camera"],
    buckets=FRAME_AGE_BUCKETS,
)
EVENTS = Counter("edge_runtime_events_total", "Defect events emitted", ["camera", "tag", "kind"])
SINK_DROPPED = Counter(
    "edge_runtime_sink_dropped_total",
    "Messages dropped undelivered by the outbox bounds: reason full (max events) or expired (max age)",
    ["sink", "reason"],
)
SINK_SENT = Counter(
    "edge_runtime_sink_sent_total", "Messages confirmed by a sink (events and summaries)", ["sink"]
)
SINK_FAILED = Counter("edge_runtime_sink_failed_total", "Delivery attempts that failed", ["sink"])
SINK_CONNECTED = Gauge("edge_runtime_sink_connected", "1 while the sink's connection is up", ["sink"])
OUTBOX_DEPTH = Gauge("edge_runtime_outbox_depth", "Messages waiting in the outbox", ["sink"])
OUTBOX_OLDEST_AGE = Gauge(
    "edge_runtime_outbox_oldest_age_seconds", "Age of the oldest undelivered message (0 when empty)", ["sink"]
)


CAMERA_STREAM = Gauge(
    "edge_runtime_camera_stream_info",
    "1 for how the camera's stream is read now: decoder (software or the hardware accelerator), decode"
    " (all | keyframes), clock (rtcp | pts | arrival: the source of frame times and ages), stream (inspect"
    " | view)",
    ["camera", "stream", "decoder", "decode", "clock"],
)
CAMERA_KEYFRAME_INTERVAL = Gauge(
    "edge_runtime_camera_keyframe_interval_seconds",
    "The stream's keyframe interval, measured from its timestamps (0 until measured)",
    ["camera", "stream"],
)


def set_camera_stream(
    camera: str, stream: str, labels: tuple[str, str, str] | None, keyframe_s: float
) -> None:
    """One series per camera and stream: the old label set is removed when the reader changes."""
    old = _stream_labels.pop((camera, stream), None)
    if old is not None:
        with contextlib.suppress(KeyError):
            CAMERA_STREAM.remove(camera, stream, *old)
    if labels is not None:
        _stream_labels[camera, stream] = labels
        CAMERA_STREAM.labels(camera, stream, *labels).set(1)
        CAMERA_KEYFRAME_INTERVAL.labels(camera, stream).set(keyframe_s)


_stream_labels: dict[tuple[str, str], tuple[str, str, str]] = {}


def set_camera_state(camera: str, state: str, all_states: list[str]) -> None:
    for name in all_states:
        CAMERA_STATE.labels(camera, name).set(1 if name == state else 0)


BATCH_SIZE = Histogram(
    "edge_runtime_inference_batch_size",
    "Inputs per micro-batch (server.batch_window_ms > 0; a batch of 1: nothing joined within the window)",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256),
)
INFERENCE_FAILURES = Counter(
    "edge_runtime_inference_failures_total",
    "Inferences on which the loaded model failed (HTTP answers 500 ModelInferenceFailed), all sources",
)

# ---- stations (triggered inspection) ---------------------------------------------------------------
# Trigger to verdict: one frame interval plus inference at best (20-200 ms), a deadline at worst.
VERDICT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)
STATION_VERDICT_SECONDS = Histogram(
    "edge_runtime_station_verdict_seconds",
    "From a trigger's arrival to its part's verdict",
    ["station"],
    buckets=VERDICT_BUCKETS,
)
STATION_VERDICTS = Counter(
    "edge_runtime_station_verdicts_total",
    "Parts judged, by verdict (pass, fail, no_verdict)",
    ["station", "verdict"],
)
STATION_NO_VERDICTS = Counter(
    "edge_runtime_station_no_verdicts_total", "Parts that got no verdict, by reason", ["station", "reason"]
)
STATION_TRIGGERS = Counter(
    "edge_runtime_station_triggers_total",
    "Triggers received, by source (http, mqtt, method, opcua) and whether the part id was new",
    ["station", "source", "outcome"],
)
STATION_PENDING = Gauge("edge_runtime_station_pending", "Parts in inspection now", ["station"])
