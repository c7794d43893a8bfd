"""A live H.264 RTSP test camera: rtsp://127.0.0.1:<port>/test, every frame stamped with its wall time.

Run with the SYSTEM interpreter (python3-gi is built for Debian's Python, not for the venv):

    /usr/bin/python3 tests/rtsp_server.py [PORT|0] [FPS] [--keyframe-s S] [--auth USER:PASSWORD]
    # prints "READY <port>" once listening

--keyframe-s: a keyframe every S seconds (x264enc key-int-max = FPS x S, no scene-cut keyframes);
by default one a second. --auth: the mount asks for HTTP Basic credentials (a wrong or missing
password is answered 401 Unauthorized).

Frames are GRAY8 320x240. Rows 0-15 hold the wall-clock time (ms, mod 2**32) when the frame was pushed,
as 32 blocks of 10x16 pixels, most significant bit first, white = 1. Rows 16-31 hold the same bits
inverted, so a reader can tell a clean decode from a damaged one (see `rtsp_fixtures.decode_stamp`).
Below that a mid-grey background with a moving bar, so consecutive frames differ.

No third-party modules besides GI: this runs under /usr/bin/python3 where numpy is not installed.
The process exits by itself when its parent dies, so a crashed test run leaves no server behind.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from fractions import Fraction

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstApp, GstRtspServer  # noqa: E402

WIDTH, HEIGHT = 320, 240
BITS, BLOCK_W, BLOCK_H = 32, 10, 16
BACKGROUND, BAR = 96, 200


def stamp_rows(ms: int) -> bytes:
    """The 32 top rows: the stamp, then its complement."""
    bits = [(ms >> (BITS - 1 - i)) & 1 for i in range(BITS)]
    row = b"".join((b"\xff" if bit else b"\x00") * BLOCK_W for bit in bits)
    inverse = b"".join((b"\x00" if bit else b"\xff") * BLOCK_W for bit in bits)
    return row * BLOCK_H + inverse * BLOCK_H


def body_rows(frame_no: int) -> bytes:
    x = (frame_no * 4) % (WIDTH - 16)
    row = bytes([BACKGROUND]) * x + bytes([BAR]) * 16 + bytes([BACKGROUND]) * (WIDTH - x - 16)
    return row * (HEIGHT - 2 * BLOCK_H)


class Camera:
    def __init__(self) -> None:
        self.sources: list[GstApp.AppSrc] = []
        self.frame_no = 0

    def on_media_configure(
        self, _factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia
    ) -> None:
        appsrc = media.get_element().get_by_name("src")
        self.sources.append(appsrc)
        media.connect(
            "unprepared", lambda _media: self.sources.remove(appsrc) if appsrc in self.sources else None
        )

    def push(self) -> bool:
        self.frame_no += 1
        ms = int(time.time() * 1000) % 2**BITS
        data = stamp_rows(ms) + body_rows(self.frame_no)
        for appsrc in list(self.sources):
            appsrc.push_buffer(Gst.Buffer.new_wrapped(data))
        return True


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="H.264 RTSP test camera")
    parser.add_argument("port", nargs="?", default="0")
    parser.add_argument("fps", nargs="?", type=float, default=25.0)  # may be below 1 (a slow camera)
    parser.add_argument("--keyframe-s", type=float, default=None, help="seconds between keyframes")
    parser.add_argument("--auth", default=None, metavar="USER:PASSWORD", help="require Basic auth")
    return parser.parse_args(argv)


def require_auth(
    server: GstRtspServer.RTSPServer, factory: GstRtspServer.RTSPMediaFactory, credentials: str
) -> None:
    """Only `credentials` (USER:PASSWORD) may see and play the mount; anyone else gets 401."""
    user, _, password = credentials.partition(":")
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    server.set_auth(auth)
    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_permission_for_role("viewer", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
    permissions.add_permission_for_role("viewer", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
    factory.set_permissions(permissions)


def main() -> int:
    args = parse_args(sys.argv[1:])
    port, fps = args.port, args.fps
    rate = Fraction(fps).limit_denominator(1000)
    if args.keyframe_s is None:
        gop = f"key-int-max={max(1, round(fps))}"
    else:  # only the interval asked for: no extra keyframe at a "scene cut"
        gop = f"key-int-max={max(1, round(fps * args.keyframe_s))} option-string=scenecut=0"
    Gst.init(None)
    camera = Camera()
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( appsrc name=src is-live=true do-timestamp=true format=time leaky-type=downstream max-buffers=2 "
        f"caps=video/x-raw,format=GRAY8,width={WIDTH},height={HEIGHT},"
        f"framerate={rate.numerator}/{rate.denominator} "
        f"! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast {gop} "
        f"! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(True)
    factory.connect("media-configure", camera.on_media_configure)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    server.get_mount_points().add_factory("/test", factory)
    if args.auth is not None:
        require_auth(server, factory, args.auth)
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

    GLib.timeout_add(max(1, round(1000 / fps)), camera.push)
    GLib.timeout_add(500, orphaned)
    print(f"READY {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
