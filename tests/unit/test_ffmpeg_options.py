"""OpenCV's FFmpeg options (the legacy reader) are set by a call (serve, open_reader), not by importing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edge_runtime.errors import SourceError
from edge_runtime.sources import readers
from edge_runtime.sources.decoding import ReaderKind

VARIABLE = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


def test_importing_the_readers_leaves_the_environment_alone() -> None:
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    code = f"import os, edge_runtime.sources.readers; print(os.environ.get({VARIABLE!r}))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"


def test_configure_sets_tcp_once_and_keeps_the_operators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    readers.configure_ffmpeg_capture()
    readers.configure_ffmpeg_capture()
    assert os.environ[VARIABLE] == "rtsp_transport;tcp"
    monkeypatch.setenv(VARIABLE, "rtsp_transport;udp")
    readers.configure_ffmpeg_capture()
    assert os.environ[VARIABLE] == "rtsp_transport;udp"


def test_open_reader_configures_before_opencv_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    seen: list[str | None] = []

    class FakeReader:
        def __init__(self, url: str, open_timeout_s: float, read_timeout_s: float, loop: bool) -> None:
            seen.append(os.environ.get(VARIABLE))
            self.loop = loop

    monkeypatch.setattr(readers, "OpenCvReader", FakeReader)
    spec = readers.StreamSpec("rtsp://camera.invalid/stream", 1.0, 1.0, reader=ReaderKind.OPENCV)
    reader = readers.open_reader(spec)
    assert seen == ["rtsp_transport;tcp"]
    assert isinstance(reader, FakeReader) and reader.loop is False


def test_synthetic_and_missing_sources_do_not_touch_opencv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    conveyor = readers.StreamSpec("synthetic://conveyor", 1.0, 1.0)
    assert isinstance(readers.open_reader(conveyor), readers.ConveyorReader)
    with pytest.raises(SourceError, match="does not exist"):
        readers.open_reader(readers.StreamSpec("/no/such/video.mp4", 1.0, 1.0))
    assert VARIABLE not in os.environ
