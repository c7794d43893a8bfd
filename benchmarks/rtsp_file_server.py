"""A pre-encoded H.264 file served as N RTSP cameras (gst-rtsp-server), in real time, for camera_bench.

Run with the SYSTEM interpreter (python3-gi is built for Debian's Python, not for the venv):

    /usr/bin/python3 benchmarks/rtsp_file_server.py make OUT.mp4 [--seconds 120]
    /usr/bin/python3 benchmarks/rtsp_file_server.py serve FILE.mp4 [--mounts 8] [--port 0] [--in-step]

`make` encodes the benchmark's stream once (GStreamer, no FFmpeg CLI needed): 1920x1080 at 30 fps,
4:2:0, x264 constant bitrate 4000 kb/s, High profile, no B-frames (like most IP cameras), a keyframe
every 60 frames exactly (2 s; scene-cut keyframes off). The picture moves everywhere, so P-frames carry
real motion and residual: the top half is SMPTE bars scrolling 4 px a frame (a conveyor), the bottom
half a zone plate whose phase changes every frame, and 10 % of video snow is blended over the whole
frame (sensor noise). It writes OUT.part and renames it, so a cached file is always complete.

`serve` publishes rtsp://127.0.0.1:<port>/cam0 .. /cam<mounts-1>, one media factory per mount, not
shared: every client session gets its own pipeline reading the file (so each camera's stream lasts the
file's length). The pipeline is `filesrc ! qtdemux ! h264parse ! rtph264pay`; the server's sinks
synchronise to the pipeline clock, so a file is sent at its own frame rate, in real time, not as fast
as the disk allows (camera_bench checks the rate the runtime sees). Mount i's sessions start
frac(0.618 i) x 2 s into the file (the frames before are dropped, the rest re-stamped), so that the
cameras' keyframes are spread over the keyframe interval, as real cameras' are, and each begins mid-GOP
with P-frames; `--in-step` starts every session at the file's first keyframe. It prints `READY <port>`
once listening, and exits by itself when its parent dies.

No third-party modules besides GI: /usr/bin/python3 has no numpy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

WIDTH, HEIGHT, FPS = 1920, 1080, 30
BITRATE_KBPS = 4000
GOP = 60  # frames: a keyframe every 2 s at 30 fps
SNOW_ALPHA = 0.1


def encode_pipeline(out: Path, frames: int) -> str:
    half = f"video/x-raw,format=I420,width={WIDTH},height={HEIGHT // 2},framerate={FPS}/1"
    full = f"video/x-raw,format=I420,width={WIDTH},height={HEIGHT},framerate={FPS}/1"
    return (
        f"compositor name=mix sink_1::ypos={HEIGHT // 2} sink_2::alpha={SNOW_ALPHA} ! {full} "
        f"! x264enc bitrate={BITRATE_KBPS} key-int-max={GOP} bframes=0 speed-preset=veryfast "
        f'option-string="scenecut=0:min-keyint={GOP}" ! video/x-h264,profile=high '
        f"! h264parse ! mp4mux ! filesink location={out} "
        f"videotestsrc num-buffers={frames} pattern=smpte horizontal-speed=4 ! {half} ! mix.sink_0 "
        f"videotestsrc num-buffers={frames} pattern=zone-plate kx2=6 ky2=6 kt=3 ! {half} ! mix.sink_1 "
        f"videotestsrc num-buffers={frames} pattern=snow ! {full} ! mix.sink_2"
    )


def make(out: Path, seconds: float) -> int:
    Gst.init(None)
    part = out.with_name(out.name + ".part")
    out.parent.mkdir(parents=True, exist_ok=True)
    pipeline = Gst.parse_launch(encode_pipeline(part, round(seconds * FPS)))
    started = time.monotonic()
    pipeline.set_state(Gst.State.PLAYING)
    bus = pipeline.get_bus()
    msg = bus.timed_pop_filtered(Gst.CLOCK_TIME_NONE, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    if msg is None or msg.type == Gst.MessageType.ERROR:
        error = msg.parse_error()[0].message if msg is not None else "no message"
        print(f"FAILED encoding {out}: {error}", file=sys.stderr, flush=True)
        part.unlink(missing_ok=True)
        return 1
    part.rename(out)
    size = out.stat().st_size
    print(
        f"made {out}: {seconds:g} s, {size / 1e6:.1f} MB ({size * 8 / seconds / 1e6:.2f} Mb/s) "
        f"in {time.monotonic() - started:.0f} s",
        flush=True,
    )
    return 0


def phase_s(i: int) -> float:
    """How far into the file mount i's sessions start: golden-ratio steps through one keyframe interval,
    so that any number of cameras has its keyframes spread out (real cameras are not in step)."""
    return ((i * 0.6180339887) % 1.0) * GOP / FPS


def serve(path: Path, mounts: int, port: int, stagger: bool) -> int:
    if not path.is_file():
        print(f"FAILED no such file {path}", flush=True)
        return 1
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    points = server.get_mount_points()
    launch = (
        f"( filesrc location={path} ! qtdemux ! h264parse name=parse "
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    for i in range(mounts):
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch)
        factory.set_shared(False)  # each session its own pipeline
        if stagger and phase_s(i) > 0:
            factory.connect("media-configure", skip_media_start, round(phase_s(i) * Gst.SECOND))
        points.add_factory(f"/cam{i}", factory)
    if server.attach(None) == 0:
        print(f"FAILED cannot listen on 127.0.0.1:{port}", flush=True)
        return 1

    loop = GLib.MainLoop()
    parent = os.getppid()

    def orphaned() -> bool:
        if os.getppid() != parent:
            loop.quit()
            return False
        return True

    def cleanup() -> bool:
        server.get_session_pool().cleanup()  # sessions of clients gone without TEARDOWN time out
        return True

    GLib.timeout_add(500, orphaned)
    GLib.timeout_add_seconds(2, cleanup)
    print(f"READY {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


def skip_media_start(_factory: object, media: GstRtspServer.RTSPMedia, skip_ns: int) -> None:
    """The session starts `skip_ns` into the file: earlier frames are dropped and the rest are
    re-stamped `skip_ns` earlier, before the payloader, so the stream plays from there at once with
    consistent RTP times and sender reports (a pad offset instead left the sender reports off by the
    shift). Like a camera joined mid-GOP, it begins with P-frames whose keyframe the client never got."""
    parse = media.get_element().get_by_name("parse")

    def shift(_pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        buffer = info.get_buffer()
        if buffer is None or buffer.pts == Gst.CLOCK_TIME_NONE:
            return Gst.PadProbeReturn.OK
        if buffer.pts < skip_ns:
            return Gst.PadProbeReturn.DROP
        buffer.pts -= skip_ns
        if buffer.dts != Gst.CLOCK_TIME_NONE:
            buffer.dts = max(0, buffer.dts - skip_ns)
        return Gst.PadProbeReturn.OK

    parse.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, shift)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_make = sub.add_parser("make", help="encode the benchmark stream to a file")
    p_make.add_argument("out", type=Path)
    p_make.add_argument("--seconds", type=float, default=120.0)
    p_serve = sub.add_parser("serve", help="serve a file as /cam0../cam<mounts-1>")
    p_serve.add_argument("file", type=Path)
    p_serve.add_argument("--mounts", type=int, default=8)
    p_serve.add_argument("--port", type=int, default=0)
    p_serve.add_argument(
        "--in-step",
        action="store_true",
        help="every session from the file's first keyframe (keyframes in step)",
    )
    args = parser.parse_args()
    if args.command == "make":
        return make(args.out, args.seconds)
    return serve(args.file.resolve(), args.mounts, args.port, not args.in_step)


if __name__ == "__main__":
    sys.exit(main())
