"""Hostile images over real TCP: truncated, bit-flipped, not images at all, formats outside
image_formats, decompression bombs, thin images and progressive-JPEG scan bombs are refused cleanly
(bombs from their headers, quickly, without memory growth) and the server keeps serving.

The server and the checks after each burst: tests/hostile_server.py.
"""

from __future__ import annotations

import io
import random

import hostile
import hostile_server
import pytest
from hostile_server import (
    IMAGE_PATHS,
    MAX_JPEG_SCANS,
    SEED,
    MiB,
    Sent,
    Server,
    answer_problems,
    container_problems,
    exchange,
    post,
    report,
    send_all,
    status_file,
)
from PIL import Image

pytestmark = pytest.mark.slow

# One `edge-runtime serve` process (the meter classifier) for the whole file: tests/hostile_server.py.
server = hostile_server.server

# Bombs, thin images and the scan bomb must be refused from their headers, before any decoding: each
# is answered within QUICK_S (the refusal itself takes milliseconds; decoding them takes 0.5 s to
# minutes) and the server's peak RSS while answering it grows by at most EARLY_BOUND.
QUICK_S = 0.5
EARLY_BOUND = 64 * MiB
IMAGE_CODES = {"BadRequestImageFormat", "BadRequestImageDimensions"}


@pytest.fixture(scope="module")
def rng_images() -> dict[str, bytes]:
    return hostile.valid_images(random.Random(SEED))


async def test_reference_answer_is_the_containers(server: Server, meter_jpeg_expected: list[float]) -> None:
    probabilities = [p["probability"] for p in server.reference["predictions"]]
    assert probabilities == pytest.approx(meter_jpeg_expected, abs=1e-4)
    report(await server.after_burst("nothing"))


async def test_truncated_images_are_400(server: Server, rng_images: dict[str, bytes]) -> None:
    rng = random.Random(SEED + 1)
    sources = {**rng_images, "meter-JPEG": server.image}
    cases = [
        Sent(f"{fmt} cut at {len(cut)} of {len(data)}", post(rng.choice(IMAGE_PATHS), cut))
        for fmt, data in sources.items()
        for cut in hostile.truncations(data, rng, 10)
    ]
    assert len(cases) >= 80  # 10 cuts of each valid image
    answers = await send_all(server.port, cases)
    problems = [
        p
        for case, a in zip(cases, answers, strict=True)
        for p in answer_problems(case.name, a, {400}, IMAGE_CODES)
    ]
    report(problems + await server.after_burst("truncated images"))


async def test_bit_flipped_images_are_predicted_or_400(server: Server, rng_images: dict[str, bytes]) -> None:
    rng = random.Random(SEED + 2)
    sources = {**rng_images, "meter-JPEG": server.image}
    cases = [
        Sent(f"{fmt} flip #{n}", post(rng.choice(IMAGE_PATHS), data))
        for fmt, source in sources.items()
        for n, data in enumerate(hostile.bit_flips(source, rng, 12))
    ]
    answers = await send_all(server.port, cases)
    problems = []
    for case, answer in zip(cases, answers, strict=True):
        problems += answer_problems(case.name, answer, {200, 400}, IMAGE_CODES)
        if answer.status == 200:
            problems += container_problems(case.name, answer)
    report(problems + await server.after_burst("bit flips"))


async def test_bodies_that_are_not_images_are_400_format(server: Server) -> None:
    rng = random.Random(SEED + 3)
    cases = [
        Sent(name, post(rng.choice(IMAGE_PATHS), data)) for name, data in hostile.not_images(rng).items()
    ]
    answers = await send_all(server.port, cases)
    problems = [
        p
        for case, a in zip(cases, answers, strict=True)
        for p in answer_problems(case.name, a, {400}, {"BadRequestImageFormat"})
    ]
    report(problems + await server.after_burst("not images"))


async def test_formats_outside_image_formats_are_400_format(server: Server) -> None:
    rng = random.Random(SEED + 4)
    cases = [
        Sent(f"{fmt} file", post(rng.choice(IMAGE_PATHS), data))
        for fmt, data in hostile.foreign_formats(rng).items()
    ]
    answers = await send_all(server.port, cases)
    problems = [
        p
        for case, a in zip(cases, answers, strict=True)
        for p in answer_problems(case.name, a, {400}, {"BadRequestImageFormat"})
    ]
    report(problems + await server.after_burst("foreign formats"))


async def refused_early(server: Server, name: str, request: bytes) -> list[str]:
    """Send one input that must be refused from its headers: 400 BadRequestImageDimensions within
    QUICK_S, the server's peak RSS during it at most EARLY_BOUND above its RSS before it."""
    server.reset_peak()
    before = status_file(server.proc.pid)["VmRSS"]
    answer = await exchange(server.port, request, timeout=60)
    problems = answer_problems(name, answer, {400}, {"BadRequestImageDimensions"})
    if answer.seconds > QUICK_S:
        problems.append(f"{name}: took {answer.seconds:.2f} s (at most {QUICK_S} s)")
    if server.proc.poll() is None:
        peak = status_file(server.proc.pid)["VmHWM"] - before
        if peak > EARLY_BOUND:
            problems.append(
                f"{name}: the server's RSS grew by {peak / MiB:.0f} MiB (at most {EARLY_BOUND / MiB:.0f})"
            )
    return problems


async def test_decompression_bombs_are_400_dimensions_quickly(server: Server) -> None:
    rng = random.Random(SEED + 5)
    bombs = hostile.bombs(rng)
    assert {name.split("-")[0] for name in bombs} == set(hostile.ALLOWED_FORMATS)
    problems = []
    for name, data in bombs.items():  # one at a time: each is timed and its memory measured
        problems += await refused_early(server, f"{name} bomb", post(rng.choice(IMAGE_PATHS), data))
    report(problems + await server.after_burst("decompression bombs"))


async def test_thin_images_are_400_dimensions_quickly_without_memory_growth(server: Server) -> None:
    rng = random.Random(SEED + 6)
    problems = []
    for width, height in hostile.THIN_SIZES:
        request = post(rng.choice(IMAGE_PATHS), hostile.thin_png(width, height))
        problems += await refused_early(server, f"thin PNG {width}x{height}", request)
        if server.proc.poll() is not None:
            break
    report(problems + await server.after_burst("thin images"))


async def test_progressive_jpeg_scan_bomb_is_400_dimensions_quickly(server: Server) -> None:
    bomb = hostile.progressive_scan_bomb()  # PIL alone needs > 1 s: tests/unit/test_hostile_generators.py
    assert hostile.count_scans(bomb) > 10_000
    problems = []
    for path in ("/image", IMAGE_PATHS[-1]):
        problems += await refused_early(server, f"scan bomb on {path}", post(path, bomb))
    report(problems + await server.after_burst("progressive scan bomb"))


async def test_jpeg_scan_limit_is_exact(server: Server) -> None:
    """max_jpeg_scans scans are served; one more is refused."""
    with Image.open(io.BytesIO(server.image)) as image:
        progressive = hostile.encode(image.convert("RGB"), "JPEG", quality=95, progressive=True)
    scans = hostile.count_scans(progressive)
    at_limit = hostile.with_extra_scans(progressive, MAX_JPEG_SCANS - scans)
    over = hostile.with_extra_scans(progressive, MAX_JPEG_SCANS + 1 - scans)
    answers = await send_all(
        server.port, [Sent("at", post("/image", at_limit)), Sent("over", post("/image", over))]
    )
    problems = answer_problems(f"{MAX_JPEG_SCANS} scans", answers[0], {200})
    problems += answer_problems(
        f"{MAX_JPEG_SCANS + 1} scans", answers[1], {400}, {"BadRequestImageDimensions"}
    )
    report(problems + await server.after_burst("scan limit"))
