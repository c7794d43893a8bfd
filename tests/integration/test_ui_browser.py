"""The operator page in a real browser (Debian's Chromium, driven by Playwright) against a real
`edge-runtime serve` process running the built-in demo (the synthetic conveyor camera `demo-conveyor`,
the demo detector with labels stain and glare, rules emitting started/ended events every few seconds).

One server (viewer and admin keys set, open_on_loopback false, so every page needs a login) and one
browser serve the whole module; every test gets fresh browser contexts (their own cookies). Every test
fails on a console error or an uncaught exception of any page it opened, except the ones it names.

Screenshots: full-page PNGs under var/test-artifacts/ui/ (git-ignored; CI keeps them as artifacts), and
1280x800 viewport PNGs of overview, camera, events and test for the README under docs/screenshots/
(committed, reduced to 256 colours: written only when missing or with EDGE_RUNTIME_UPDATE_SCREENSHOTS=1,
so that an ordinary test run leaves the tracked files alone).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from PIL import Image
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Error,
    Page,
    Playwright,
    Response,
    ViewportSize,
    expect,
    sync_playwright,
)
from processes import free_port, wait_ready

from edge_runtime.demo.camera import DEMO_CAMERA

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "var" / "test-artifacts" / "ui"
DOC_SHOTS = REPO / "docs" / "screenshots"
UPDATE_DOC_SHOTS = os.environ.get("EDGE_RUNTIME_UPDATE_SCREENSHOTS") == "1"
CHROMIUM = Path("/usr/bin/chromium")
# Without these Chromium keeps trying to reach Google's services (refused on a closed network).
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
WAIT_MS = 20_000  # the demo shows a defect every few seconds

ADMIN_KEY = "admin-key-0123456789"
VIEWER_KEY = "viewer-key-0123456789"
CAMERA = "demo-conveyor"
STATION = "station-1"

if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)", allow_module_level=True)


# --------------------------------------------------------------------------------------------------
# The runtime and the browser


@dataclass(frozen=True, slots=True)
class Runtime:
    url: str
    log: Path  # the process's stdout and stderr


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """`python -m edge_runtime serve` on the built-in demo, keys set, no loopback viewers."""
    folder = tmp_path_factory.mktemp("ui-browser")
    config = {
        "server": {"admin_key": ADMIN_KEY},
        "ui": {"viewer_key": VIEWER_KEY, "open_on_loopback": False},
        # The demo camera as the CLI adds it, decoding every frame for a station on it.
        "cameras": [DEMO_CAMERA.model_dump(mode="json", exclude_defaults=True) | {"decode": "all"}],
        "stations": [{"id": STATION, "cameras": [CAMERA], "frames": 2, "defects": [{"tag": "stain"}]}],
        "events": {
            "jsonl_path": str(folder / "events.jsonl"),
            "snapshot_dir": str(folder / "snapshots"),
            "outbox_path": str(folder / "outbox.sqlite3"),
            "history_path": str(folder / "history.sqlite3"),
        },
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_RUNTIME_")}
    env["TMPDIR"] = str(folder)  # the demo model is written under the temp dir
    log = folder / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge_runtime",
                "serve",
                "--config",
                str(folder / "config.yaml"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=folder,  # anything relative (var/models) stays in the temp dir
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc, log, timeout=60)
        yield Runtime(url, log)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()


# --------------------------------------------------------------------------------------------------
# Contexts that record console errors


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str  # "console" | "pageerror"
    text: str
    url: str  # the page's, or the resource's for "Failed to load resource"

    def __str__(self) -> str:
        return f"{self.kind}: {self.text} ({self.url})"


@dataclass(frozen=True, slots=True)
class Allowed:
    """An expected console error: its text contains `text`, and its location's URL path is `path`."""

    text: str
    path: str

    def matches(self, problem: Problem) -> bool:
        return (
            problem.kind == "console"
            and self.text in problem.text
            and urlsplit(problem.url).path == self.path
        )


def failed_load(status: int, path: str) -> Allowed:
    """Chromium's own log line for a fetch() answered with an HTTP error: the page handles the answer,
    but the browser logs every 4xx/5xx resource as a console error regardless."""
    return Allowed(f"Failed to load resource: the server responded with a status of {status}", path)


@dataclass
class Browsing:
    """Browser contexts for one test; every page's console errors and uncaught exceptions recorded."""

    browser: Browser
    base: str
    problems: list[Problem] = field(default_factory=list)
    contexts: list[BrowserContext] = field(default_factory=list)

    def context(self, key: str | None = None, viewport: ViewportSize = VIEWPORT) -> BrowserContext:
        """A fresh context (no cookies); logged in through POST /ui/api/login when a key is given."""
        context = self.browser.new_context(viewport=viewport, base_url=self.base, has_touch=True)
        context.set_default_timeout(WAIT_MS)
        context.on("page", self._watch)
        self.contexts.append(context)
        if key is not None:
            answer = context.request.post("/ui/api/login", data={"key": key})
            assert answer.ok, answer.text()
        return context

    def page(self, key: str | None = None) -> Page:
        return self.context(key).new_page()

    def _watch(self, page: Page) -> None:
        def console(message: ConsoleMessage) -> None:
            if message.type == "error":
                self.problems.append(Problem("console", message.text, message.location.get("url", "")))

        def error(exc: Error) -> None:
            self.problems.append(Problem("pageerror", f"{exc.name}: {exc.message}", page.url))

        page.on("console", console)
        page.on("pageerror", error)

    def assert_clean(self, *allowed: Allowed) -> None:
        """No console error and no uncaught exception, except exactly one of each `allowed`."""
        left = list(self.problems)
        for expected in allowed:
            matching = [p for p in left if expected.matches(p)]
            assert len(matching) == 1, f"expected one console error like {expected}, got {matching}"
            left.remove(matching[0])
        assert not left, "console errors:\n" + "\n".join(map(str, left))

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def browsing(browser: Browser, runtime: Runtime) -> Iterator[Browsing]:
    session = Browsing(browser, runtime.url)
    yield session
    session.close()


# --------------------------------------------------------------------------------------------------
# Helpers


def keep(page: Page, name: str, readme: bool = False) -> None:
    """A full-page screenshot artifact; with `readme`, also the viewport for docs/screenshots/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)
    if readme:
        viewport = ARTIFACTS / f"{name}-viewport.png"
        page.screenshot(path=viewport)
        committed = DOC_SHOTS / f"{name}.png"
        if UPDATE_DOC_SHOTS or not committed.exists():
            DOC_SHOTS.mkdir(parents=True, exist_ok=True)
            # 256 colours: a quarter of the size, the page's flat colours unchanged.
            with Image.open(viewport) as shot:
                small = shot.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
            small.save(committed, optimize=True)


def image_loaded(page: Page, selector: str) -> None:
    """Until the image under `selector` has decoded pixels (naturalWidth > 0)."""
    page.wait_for_function(
        "(s) => { const i = document.querySelector(s); return !!i && i.complete && i.naturalWidth > 0; }",
        arg=selector,
    )


def count(page: Page, selector: str) -> int:
    return page.locator(selector).count()


def api_json(context: BrowserContext, path: str) -> Any:
    answer = context.request.get(path)
    assert answer.ok, answer.text()
    return answer.json()


def wait_for_history(context: BrowserContext, *kinds: str) -> None:
    """Until the history holds an event of each kind (the demo emits one every few seconds)."""
    deadline = time.monotonic() + WAIT_MS / 1000
    for kind in kinds:
        while not api_json(context, f"/ui/api/events?kind={kind}&limit=1")["events"]:
            assert time.monotonic() < deadline, f"no {kind} event in the history"
            time.sleep(0.2)


def is_path(path: str) -> Callable[[Response], bool]:
    return lambda response: urlsplit(response.url).path == path


# --------------------------------------------------------------------------------------------------
# Tests (in file order: the configuration test changes the camera's fps and puts it back, last)


def test_login(browsing: Browsing, runtime: Runtime) -> None:
    context = browsing.context()
    page = context.new_page()

    response = page.goto("/ui/")
    assert response is not None and response.ok
    assert page.url == runtime.url + "/ui/login?next=/ui/"  # back to the overview after the login
    redirect = response.request.redirected_from
    assert redirect is not None and redirect.url == runtime.url + "/ui/"

    page.fill("#key", "not-the-key-0123456789")
    with page.expect_response(is_path("/ui/api/login")) as refused:
        page.click("#login button[type=submit]")
    assert refused.value.status == 401
    error = page.locator("#login-error")
    error.wait_for(state="visible")
    assert error.text_content() == "wrong key"
    assert page.url == runtime.url + "/ui/login?next=/ui/"
    assert context.cookies() == []

    page.fill("#key", VIEWER_KEY)
    page.click("#login button[type=submit]")
    page.wait_for_url(runtime.url + "/ui/")
    [cookie] = context.cookies()
    assert cookie.get("name") == "edge_ui"
    assert cookie.get("httpOnly") is True
    assert cookie.get("sameSite") == "Strict"
    assert cookie.get("path") == "/ui"
    assert page.evaluate("() => document.cookie") == ""  # HttpOnly: not readable by scripts
    who = page.locator("#who")
    who.filter(has_text="viewer").wait_for()
    assert (who.text_content() or "").startswith("viewer")
    assert page.locator("#who button", has_text="Log out").is_visible()

    # The wrong key's POST /ui/api/login answered 401 (shown as "wrong key" in the form).
    browsing.assert_clean(failed_load(401, "/ui/api/login"))


def test_overview_streams_and_events_arrive_live(browsing: Browsing) -> None:
    page = browsing.page(VIEWER_KEY)
    page.goto("/ui/")
    card = f'.camera-card[data-camera="{CAMERA}"]'
    page.locator(f"{card} .badge.streaming", has_text="streaming").wait_for()
    image_loaded(page, f"{card} img.thumb")
    page.locator("#live-state", has_text="live").wait_for()  # after the history's recent events loaded
    page.locator("#model-card .badge.ready").wait_for()
    assert "stain, glare" in (page.text_content("#model-card") or "")

    page.evaluate("() => { window.notReloaded = true; }")
    known = page.eval_on_selector_all(
        "#recent li[data-event]", "(items) => items.map((i) => i.dataset.event)"
    )
    page.wait_for_function(
        "(known) => [...document.querySelectorAll('#recent li[data-event]')]"
        ".some((li) => !known.includes(li.dataset.event))",
        arg=known,
    )
    assert page.evaluate("() => window.notReloaded === true")  # pushed over SSE, no reload
    first = page.locator("#recent li[data-event]").first
    new_id = first.get_attribute("data-event")
    assert new_id is not None and new_id not in known
    event = api_json(page.context, f"/ui/api/events/{new_id}")  # a real event of the history
    assert event["camera"] == CAMERA
    assert event["tag"] in (first.text_content() or "")

    keep(page, "overview", readme=True)
    browsing.assert_clean()


def test_camera_view_draws_frame_and_boxes(browsing: Browsing) -> None:
    page = browsing.page(VIEWER_KEY)
    page.goto(f"/ui/camera?id={CAMERA}")
    # The page's script sets the title once its session answers (after "load"): wait for it, then check.
    expect(page.locator("#title")).to_have_text(f"Camera {CAMERA}")
    image_loaded(page, "#frame")
    page.locator("#status .badge.streaming").wait_for()
    status = page.text_content("#status") or ""
    assert "synthetic" in status and "640x480" in status, status  # the reader and resolution shown
    page.wait_for_function("() => document.querySelectorAll('#overlay rect.box').length > 0")
    size = page.eval_on_selector("#frame", "(i) => [i.naturalWidth, i.naturalHeight]")
    assert page.get_attribute("#overlay", "viewBox") == f"0 0 {size[0]} {size[1]}"
    assert f"{size[0]}x{size[1]}" in (page.text_content("#frame-info") or "")
    labels = page.locator("#overlay text.box-label").all_text_contents()
    assert labels and all(label.split()[0] in ("stain", "glare") for label in labels), labels
    rules = page.text_content("#rules") or ""
    assert "stain @ full" in rules and "glare @ full" in rules, rules
    assert " of the last 3 frames (k=2)" in rules, rules
    keep(page, "camera", readme=True)
    browsing.assert_clean()


def test_events_filters_errors_and_detail(browsing: Browsing) -> None:
    page = browsing.page(VIEWER_KEY)
    wait_for_history(page.context, "started", "ended")
    page.goto("/ui/events")
    rows = "#events tbody tr[data-event]"
    page.locator(rows).first.wait_for()
    image_loaded(page, f"{rows} img.snap")
    kinds = page.locator(f"{rows} td:nth-child(6)").all_text_contents()
    assert {"started", "ended"} <= set(kinds), kinds

    # Filter by kind: only ended rows.
    page.select_option("#f-kind", "ended")
    with page.expect_response(is_path("/ui/api/events")) as filtered:
        page.click("#filters button[type=submit]")
    assert parse_qs(urlsplit(filtered.value.url).query)["kind"] == ["ended"]
    page.wait_for_function(
        "(rows) => { const k = [...document.querySelectorAll(rows + ' td:nth-child(6)')]"
        ".map((td) => td.textContent); return k.length > 0 && k.every((t) => t === 'ended'); }",
        arg=rows,
    )
    image_loaded(page, f"{rows} img.snap")

    # A time range that ends before it starts: the page sends both as ISO times; the API's 400 shows.
    page.fill("#f-since", "2030-01-01T00:00:00")
    page.fill("#f-until", "2020-01-01T00:00:00")
    with page.expect_response(is_path("/ui/api/events")) as refused:
        page.click("#filters button[type=submit]")
    sent = parse_qs(urlsplit(refused.value.url).query)
    since, until = (datetime.fromisoformat(sent[name][0]) for name in ("since", "until"))
    assert since.tzinfo is not None and until.tzinfo is not None  # local times sent as UTC
    assert since.year == 2030 and until.year in (2019, 2020) and since > until
    assert refused.value.status == 400
    message = refused.value.json()["message"]
    assert "until" in message
    error = page.locator("#events-error")
    error.wait_for(state="visible")
    assert error.text_content() == message

    # Reset, then a started event's detail: its snapshot (the defect boxed) and its JSON.
    with page.expect_response(is_path("/ui/api/events")) as reset:
        page.click("#f-reset")
    assert reset.value.ok
    error.wait_for(state="hidden")
    page.locator(rows).first.wait_for()
    image_loaded(page, f"{rows} img.snap")
    row = page.locator(rows).filter(has=page.locator("td:nth-child(6)", has_text="started")).first
    event_id = row.get_attribute("data-event")
    row.click()
    page.locator("#detail[open]").wait_for()
    image_loaded(page, "#detail-snapshot")
    detail = json.loads(page.text_content("#detail-json") or "")
    assert detail["id"] == event_id
    assert detail["camera"] == CAMERA and detail["kind"] == "started"
    assert detail["snapshot"]
    title = f"{detail['kind']} {detail['tag']} on {CAMERA}/{detail['roi']}"
    assert page.text_content("#detail-title") == title
    keep(page, "events", readme=True)
    page.click("#detail-close")
    page.locator("#detail[open]").wait_for(state="detached")

    # The bad range's GET /ui/api/events answered 400 (shown in #events-error): Chromium logs it.
    browsing.assert_clean(failed_load(400, "/ui/api/events"))


def test_test_page_draws_predictions(browsing: Browsing, shared_models: Path) -> None:
    image = shared_models / "onnx12-cat-or-dog" / "test-dog.jpg"
    page = browsing.page(VIEWER_KEY)
    page.goto("/ui/test")
    page.locator("#who", has_text="viewer").wait_for()  # the page's script is running
    with page.expect_response(is_path("/ui/api/predict")) as predicted:
        page.set_input_files("#file", image)
    assert predicted.value.ok
    # The same prediction as a script asks for it (the browser may not keep the page's answer body).
    answer = page.context.request.post(
        "/ui/api/predict",
        data=image.read_bytes(),
        headers={"Authorization": f"Bearer {VIEWER_KEY}", "Content-Type": "image/jpeg"},
    )
    assert answer.ok, answer.text()
    predictions = answer.json()["predictions"]
    page.locator("#result").wait_for(state="visible")
    image_loaded(page, "#tested")
    assert page.input_value("#threshold") == "0.3"
    assert page.text_content("#threshold-value") == "0.30"
    assert count(page, "#test-predictions tbody tr") == min(30, len(predictions)) > 0
    shown = [p for p in predictions if p["boundingBox"] and p["probability"] >= 0.3]
    assert shown and {p["tagName"] for p in shown} <= {"stain", "glare"}
    assert count(page, "#test-overlay rect.box") == len(shown)
    size = page.eval_on_selector("#tested", "(i) => [i.naturalWidth, i.naturalHeight]")
    assert page.get_attribute("#test-overlay", "viewBox") == f"0 0 {size[0]} {size[1]}"
    keep(page, "test", readme=True)

    # A higher threshold shows fewer boxes.
    page.eval_on_selector(
        "#threshold", "(r) => { r.value = '1'; r.dispatchEvent(new Event('input', { bubbles: true })); }"
    )
    assert page.text_content("#threshold-value") == "1.00"
    assert count(page, "#test-overlay rect.box") == sum(1 for p in shown if p["probability"] >= 1.0)
    browsing.assert_clean()


def effective_in_page(page: Page) -> Any:
    return json.loads(page.text_content("#effective") or "")


def test_configuration_viewer_and_admin(browsing: Browsing) -> None:
    # A viewer: no editor, the effective configuration with secrets masked.
    viewer = browsing.page(VIEWER_KEY)
    viewer.goto("/ui/config")
    viewer.locator("#effective", has_text="demo-conveyor").wait_for()
    assert viewer.locator("#editor").is_hidden()
    assert viewer.locator("#readonly").is_visible()
    effective = effective_in_page(viewer)
    assert effective["server"]["admin_key"] == "***" and effective["ui"]["viewer_key"] == "***"
    assert effective["cameras"][CAMERA]["fps"] > 0
    for text in (viewer.content(), viewer.inner_text("body")):
        assert ADMIN_KEY not in text and VIEWER_KEY not in text

    # The admin, logged in through the form in a new context.
    admin = browsing.page()
    admin.goto("/ui/login")
    admin.fill("#key", ADMIN_KEY)
    admin.click("#login button[type=submit]")
    admin.wait_for_url("**/ui/")
    admin.goto("/ui/config")
    admin.locator("#effective", has_text="demo-conveyor").wait_for()
    assert admin.locator("#editor").is_visible()
    assert "cameras" in (admin.text_content("#sections") or "")
    assert ADMIN_KEY not in admin.content()
    before = api_json(admin.context, "/ui/api/config")
    fps = before["effective"]["cameras"][CAMERA]["fps"]
    result = admin.locator("#config-result")

    def press(button: str, path: str, status: int) -> str:
        """Click Check or Apply; the answer's status and the message the page shows for it."""
        result.evaluate("(node) => { node.textContent = ''; node.className = ''; }")
        with admin.expect_response(is_path(path)) as answer:
            admin.click(button)
        assert answer.value.status == status, answer.value.text()
        expected = "error" if status >= 400 else "ok-text"
        admin.wait_for_function(
            "(c) => document.querySelector('#config-result').className === c && "
            "document.querySelector('#config-result').textContent !== ''",
            arg=expected,
        )
        return result.text_content() or ""

    # An invalid patch: Check and Apply both say why; nothing is applied, not even the desired document.
    admin.fill("#patch", json.dumps({"cameras": {CAMERA: {"fps": -1}}}))
    checked = press("#check", "/ui/api/config/check", 400)
    assert "fps" in checked and "greater than 0" in checked, checked
    applied = press("#apply", "/ui/api/config", 400)
    assert "fps" in applied and "greater than 0" in applied, applied
    after = api_json(admin.context, "/ui/api/config")
    assert after["desired"] == before["desired"]
    assert after["effective"]["cameras"][CAMERA]["fps"] == fps
    assert after["status"] == before["status"]

    # A valid one: Check applies nothing, Apply does and the page shows the new effective value.
    admin.fill("#patch", json.dumps({"cameras": {CAMERA: {"fps": 3}}}))
    assert press("#check", "/ui/api/config/check", 200) == "valid: nothing applied yet"
    assert api_json(admin.context, "/ui/api/config")["effective"]["cameras"][CAMERA]["fps"] == fps
    assert press("#apply", "/ui/api/config", 200).startswith("applied: camera demo-conveyor changed")
    admin.wait_for_function(
        "(c) => JSON.parse(document.querySelector('#effective').textContent).cameras[c].fps === 3",
        arg=CAMERA,
    )
    assert effective_in_page(admin)["cameras"][CAMERA]["fps"] == 3
    assert api_json(admin.context, "/ui/api/config")["desired"] == {"cameras": {CAMERA: {"fps": 3}}}
    keep(admin, "config")

    # Put the demo's own fps back (null removes the desired value).
    admin.fill("#patch", json.dumps({"cameras": {CAMERA: {"fps": None}}}))
    press("#apply", "/ui/api/config", 200)
    admin.wait_for_function(
        "([c, fps]) => JSON.parse(document.querySelector('#effective').textContent).cameras[c].fps === fps",
        arg=[CAMERA, fps],
    )

    # The invalid patch's POST /ui/api/config/check and PATCH /ui/api/config answered 400 (shown in
    # #config-result): Chromium logs each as a console error.
    browsing.assert_clean(failed_load(400, "/ui/api/config/check"), failed_load(400, "/ui/api/config"))


TABLET = ViewportSize(width=768, height=1024)  # a tablet held upright at the line


def test_station_verdicts_show_on_the_overview_and_in_the_events(
    browsing: Browsing, runtime: Runtime
) -> None:
    page = browsing.page(VIEWER_KEY)
    page.goto("/ui/")
    page.locator("#live-state", has_text="live").wait_for()
    answer = page.context.request.post(f"/stations/{STATION}/trigger", data={"partId": "part-4711"})
    assert answer.ok, answer.text()
    verdict = answer.json()
    assert verdict["verdict"] in ("pass", "fail") and len(verdict["frames"]) == 2
    row = page.locator(f'#stations tr[data-station="{STATION}"]')
    expect(row).to_contain_text("part-4711")  # pushed over SSE
    expect(row.locator("td").nth(2)).to_have_text("1")
    expect(row.locator(".badge").first).to_have_text(verdict["verdict"])

    page.goto("/ui/events?kind=verdict")
    page.select_option("#f-kind", "verdict")
    with page.expect_response(is_path("/ui/api/events")):
        page.click("#filters button[type=submit]")
    verdict_row = page.locator(f'#events tbody tr[data-event="{verdict["id"]}"]')
    expect(verdict_row).to_contain_text("part part-4711")
    expect(verdict_row).to_contain_text(STATION)
    image_loaded(page, f'#events tbody tr[data-event="{verdict["id"]}"] img.snap')
    verdict_row.click()
    page.locator("#detail[open]").wait_for()
    image_loaded(page, "#detail-snapshot")
    detail = json.loads(page.text_content("#detail-json") or "")
    assert detail["part_id"] == "part-4711" and detail["station"] == STATION
    assert page.text_content("#detail-title") == f"{verdict['verdict']}: part part-4711 at station {STATION}"
    browsing.assert_clean()


def test_pages_fit_a_tablet(browsing: Browsing) -> None:
    """No page scrolls sideways on a portrait tablet, and its buttons are big enough to touch."""
    page = browsing.context(VIEWER_KEY, viewport=TABLET).new_page()
    for path, ready in (
        ("/ui/", f'.camera-card[data-camera="{CAMERA}"] .badge.streaming'),
        (f"/ui/camera?id={CAMERA}", "#status .badge.streaming"),
        ("/ui/events", "#events tbody tr"),
        ("/ui/test", "#file"),
        ("/ui/config", "#effective"),
    ):
        page.goto(path)
        page.locator(ready).first.wait_for()
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} is {overflow}px wider than the tablet's screen"
        small = page.eval_on_selector_all(
            "button:not([hidden])",
            "(buttons) => buttons.filter((b) => b.offsetParent !== null && b.offsetHeight < 40)"
            ".map((b) => b.textContent)",
        )
        assert not small, f"{path}: buttons under 40 px tall: {small}"
    browsing.assert_clean()


def test_runtime_logged_no_errors(runtime: Runtime) -> None:
    """Whatever the pages asked above, the runtime answered it without an error or a traceback."""
    lines = runtime.log.read_text(errors="replace").splitlines()
    bad = [line for line in lines if " ERROR " in line or " CRITICAL " in line or "Traceback" in line]
    assert not bad, "\n".join(bad)
