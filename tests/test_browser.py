"""What a person does, in a real browser against a real `atelier up`: fill the style-transfer form
(upload a photo, click an example painting), submit, watch the job page move on its own (step numbers
rising, a preview appearing), then see the result with its download link and the loss curve.

Headless Chromium comes from the system package (`apt-get install chromium`); Playwright only drives
it, it never downloads a browser. A missing Chromium fails the test with the command to run; it never
skips, so CI cannot pass without having looked.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.stack import Proc, base_env, run_cli

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
                 "--no-first-run", "--disable-component-update", "--disable-sync"]
REPO_ROOT = Path(__file__).resolve().parent.parent
CHELSEA = REPO_ROOT / "web" / "static" / "examples" / "content" / "chelsea.png"
EXAMPLE = "starry_night.jpg"
TERMINAL = ("succeeded", "failed", "canceled")
SIZE = 40
# Enough steps that the job runs for several of the page's ~1 s polls even as the engine gets faster
# (about 0.1 s a step at this size on 2 cores today), so the page must show the step rising mid-run.
STEPS = 120


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install the browser with `apt-get install -y chromium` "
                    "(the Debian package; Playwright must not download one)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def atelier_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m atelier up` on a free port with random VGG weights and fast progress/previews (one
    server for the module: starting one costs seconds, and the tests' jobs do not interfere)."""
    tmp_path = tmp_path_factory.mktemp("atelier-up")
    env = base_env(tmp_path, ATELIER_PREVIEW_EVERY="5", ATELIER_PROGRESS_INTERVAL="0.2")
    yield from _serve_up(env, tmp_path)


def _serve_up(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """Start ``atelier up`` with ``env``, yield its URL once it serves pages, stop it afterwards."""
    proc = Proc(["up"], env, tmp_path / "atelier-up.log")
    url = f"http://127.0.0.1:{env['ATELIER_PORT']}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.popen.poll() is not None:
                pytest.fail(f"`atelier up` exited with {proc.popen.returncode}:\n{proc.output()[-4000:]}")
            try:
                if requests.get(url + "/", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"`atelier up` did not serve {url} within 120 s:\n{proc.output()[-4000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.stop()


@dataclass
class Watch:
    """What the job page showed while the job ran, sampled from the DOM."""

    texts: list[str] = field(default_factory=list)
    running_steps: list[int] = field(default_factory=list)
    preview_while_running: str | None = None
    status: str = ""


def watch_job_page(page, timeout_s: float) -> Watch:  # type: ignore[no-untyped-def]
    """Sample the page (not the API) every 50 ms until the job is terminal: the page must update itself."""
    seen = Watch()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = page.evaluate("""() => ({
            status: document.getElementById('job').getAttribute('data-status'),
            text: document.getElementById('job-progress-text').textContent,
            preview: document.getElementById('job-preview').hidden ? null
                     : document.getElementById('job-preview-img').getAttribute('src'),
        })""")
        seen.status = state["status"]
        if not seen.texts or seen.texts[-1] != state["text"]:
            seen.texts.append(state["text"])
        if state["status"] == "running":
            m = re.fullmatch(r"step (\d+) of (\d+)", state["text"])
            if m and (not seen.running_steps or seen.running_steps[-1] != int(m.group(1))):
                seen.running_steps.append(int(m.group(1)))
            if state["preview"] and seen.preview_while_running is None:
                seen.preview_while_running = state["preview"]
        if state["status"] in TERMINAL:
            return seen
        page.wait_for_timeout(50)
    return seen


@contextlib.contextmanager
def watched_page(browser, *, console_errors: bool = False,  # type: ignore[no-untyped-def]
                 **context_options: Any) -> Iterator[tuple[Any, list[str]]]:
    """A page in a fresh browser context (closed afterwards) and the list its script errors go into (and
    its console errors, with ``console_errors``): each test asserts the list is empty where it should be."""
    context = browser.new_context(**context_options)
    page = context.new_page()
    problems: list[str] = []
    if console_errors:
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        yield page, problems
    finally:
        context.close()


def submit_style_transfer(page, base_url: str) -> str:  # type: ignore[no-untyped-def]
    """Fill the home form like a person: upload the photo, click a painting, set size and steps."""
    page.goto(base_url + "/")
    page.set_input_files("#input-file-content", str(CHELSEA))
    page.click(f"label.example:has(input[value='{EXAMPLE}']) img")
    assert page.is_checked(f"input[name=example_style][value='{EXAMPLE}']")
    page.fill("#input-param-size", str(SIZE))
    page.fill("#input-param-steps", str(STEPS))
    page.click("#submit-job")
    page.wait_for_url(re.compile(r".*/jobs/[0-9a-f-]{36}$"), timeout=30_000)
    return page.url


def check_form_to_result(browser, base_url: str) -> None:  # type: ignore[no-untyped-def]
    with watched_page(browser, viewport={"width": 1200, "height": 900}, accept_downloads=False,
                      console_errors=True) as (page, problems):
        job_url = submit_style_transfer(page, base_url)
        seen = watch_job_page(page, timeout_s=300)
        assert seen.status == "succeeded", f"job ended {seen.status!r}; page showed {seen.texts}"
        steps = seen.running_steps
        assert len(steps) >= 2 and steps == sorted(steps), f"step numbers seen while running: {steps} ({seen.texts})"
        assert seen.preview_while_running and "/preview" in seen.preview_while_running, seen
        assert page.text_content("#job-progress-text") == f"Done: step {STEPS} of {STEPS}"
        assert "not artistic" in (page.text_content("#job") or ""), "random weights are said plainly"

        result = page.locator("#job-outputs img.result-img").first
        result.wait_for(state="visible", timeout=10_000)
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=result.element_handle())
        assert page.evaluate("img => Math.max(img.naturalWidth, img.naturalHeight)", result.element_handle()) == SIZE
        download = page.locator("#job-outputs a.download").first
        href = download.get_attribute("href")
        assert href and href.endswith("?download=1")
        got = page.context.request.get(base_url + href if href.startswith("/") else href)
        assert got.status == 200 and got.headers["content-type"] == "image/png"
        assert got.headers.get("content-disposition", "").startswith("attachment")

        page.wait_for_selector("#loss-plot svg polyline", timeout=10_000)
        points = page.get_attribute("#loss-plot svg polyline", "points") or ""
        assert len(points.split()) >= 2, points
        assert page.locator("#job-cancel").is_hidden()
        assert job_url.endswith(page.url.rsplit("/", 1)[-1])

        page.goto(base_url + "/jobs")
        row = page.locator(f"tr[data-job-id='{job_url.rsplit('/', 1)[-1]}']")
        assert "succeeded" in (row.text_content() or "")
        assert row.locator("img.thumb").count() == 1
        assert not problems, f"browser console errors: {problems}"


def test_a_person_runs_a_style_transfer_from_the_form(browser,  # type: ignore[no-untyped-def]
                                                     atelier_up: str) -> None:
    check_form_to_result(browser, atelier_up)


def test_one_click_demo_training_plots_losses_shows_samples_and_cancels(browser,  # type: ignore[no-untyped-def]
                                                          atelier_up: str) -> None:
    """The datasets page's demo button registers the demo dataset and lands on a running CycleGAN job;
    the job page's cancel button (JavaScript, through the API) stops it."""
    with watched_page(browser, viewport={"width": 1200, "height": 900}, console_errors=True) as (page, problems):
        page.goto(atelier_up + "/datasets")
        page.click("#demo-train")
        page.wait_for_url(re.compile(r".*/jobs/[0-9a-f-]{36}$"), timeout=60_000)
        job_id = page.url.rsplit("/", 1)[-1]
        assert "CycleGAN" in (page.text_content("h1") or "")
        job = requests.get(f"{atelier_up}/api/v1/jobs/{job_id}", timeout=10).json()
        assert job["kind"] == "cyclegan_train" and job["params"]["dataset"]
        page.wait_for_function(
            "() => /^step [1-9]\\d* of \\d+$/.test(document.getElementById('job-progress-text').textContent)",
            timeout=240_000)
        # the loss terms are plotted as they come, one line each, and the preview is the sample grid
        # (real A, fake B, reconstructed A over real B, fake A, reconstructed B: 3 x 2 tiles)
        page.wait_for_function("() => document.querySelectorAll('#loss-plot polyline.series').length >= 6",
                               timeout=120_000)
        plotted = set(page.eval_on_selector_all("#loss-plot polyline.series", "els => els.map(e => e.dataset.series)"))
        assert {"D_A", "G_A", "cycle_A", "D_B", "G_B", "cycle_B"} <= plotted, plotted
        page.wait_for_function("() => { const i = document.getElementById('job-preview-img');"
                               " return !document.getElementById('job-preview').hidden && i.complete"
                               " && i.naturalWidth > 0; }", timeout=120_000)
        w, h = page.eval_on_selector("#job-preview-img", "i => [i.naturalWidth, i.naturalHeight]")
        tile = (w - 4) / 3  # 3 tiles and 2 px gaps across; 2 rows, each under its label strip
        assert 2 * tile + 2 < h < 2 * tile + 2 + tile, (w, h)
        page.click("#job-cancel button")
        page.wait_for_function("() => document.getElementById('job').getAttribute('data-status') === 'canceled'",
                               timeout=120_000)
        assert page.locator("#job-cancel").is_hidden()
        assert (page.text_content("#job-progress-text") or "").startswith("Canceled at step")

        page.goto(atelier_up + "/datasets")
        assert page.locator("table.resources-table tbody tr").count() >= 1
        assert "demo" in (page.text_content("table.resources-table") or "")
        assert not problems, f"browser console errors: {problems}"


def test_a_stored_input_carrying_html_runs_no_script(browser, atelier_up: str) -> None:  # type: ignore[no-untyped-def]
    """A valid PNG with an HTML page appended, uploaded as ``text/html`` under a ``<script>`` name: opened
    directly and shown on its job page, no script of it runs (the stored XSS of issue 9)."""
    from tests.test_security import PNG_HTML

    style = (REPO_ROOT / "web" / "static" / "examples" / "styles" / EXAMPLE).read_bytes()
    resp = requests.post(f"{atelier_up}/api/v1/jobs", timeout=30, data={"kind": "style_transfer",
                                                                       "params": '{"size": 32, "steps": 2}'},
                         files=[("content", ("<script>alert(1)</script>.html", PNG_HTML, "text/html")),
                                ("style", (EXAMPLE, style, "image/jpeg"))])
    assert resp.status_code == 202, resp.text
    job = resp.json()
    [content] = [f for f in job["inputs"] if f["role"] == "content"]
    context = browser.new_context()
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        for url in (atelier_up + content["url"], f"{atelier_up}/jobs/{job['id']}"):
            page.goto(url)
            page.wait_for_timeout(300)
            assert page.title() != "pwned", url
            assert page.evaluate("() => document.documentElement.outerHTML").count("<script>alert(1)") == 0, url
        assert dialogs == []
    finally:
        context.close()


# -- the dashboard's readability (issue 14): event log, phone widths, comparison, screenshots ----------
PHONE = {"width": 390, "height": 844}


def up_services(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Services on the data directory of the module's `atelier up` (the same SQLite file), to add rows the
    way a worker would: a busy job's many log lines."""
    from core.services import build_services
    from core.settings import Settings

    [data] = sorted(tmp_path_factory.getbasetemp().glob("atelier-up*/data"))[-1:]
    return build_services(Settings(data_dir=data, vgg19_weights="random", device="cpu"))


def submit_api_style(base_url: str, steps: int, size: int = 32, name: str | None = None) -> str:
    style = (REPO_ROOT / "web" / "static" / "examples" / "styles" / EXAMPLE).read_bytes()
    data = {"kind": "style_transfer", "params": f'{{"size": {size}, "steps": {steps}}}'}
    if name:
        data["name"] = name
    resp = requests.post(f"{base_url}/api/v1/jobs", timeout=30, data=data,
                         files=[("content", ("chelsea.png", CHELSEA.read_bytes(), "image/png")),
                                ("style", (EXAMPLE, style, "image/jpeg"))])
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def wait_status(base_url: str, job_id: str, wanted: tuple[str, ...], timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = requests.get(f"{base_url}/api/v1/jobs/{job_id}", timeout=10).json()["status"]
        if status in wanted:
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not reach {wanted} within {timeout_s} s")


def scroll_state(page) -> dict:  # type: ignore[no-untyped-def]
    return page.evaluate("""() => { const ol = document.getElementById('job-events');
        return {top: ol.scrollTop, bottomGap: ol.scrollHeight - ol.scrollTop - ol.clientHeight,
                scrollable: ol.scrollHeight > ol.clientHeight + 24,
                jump: !document.getElementById('events-newest').hidden, lines: ol.children.length}; }""")


def test_the_event_log_opens_at_the_newest_line_and_follows_until_the_reader_scrolls_up(
        browser, atelier_up: str, tmp_path_factory: pytest.TempPathFactory) -> None:  # type: ignore[no-untyped-def]
    from core.jobs import repository as repo

    services = up_services(tmp_path_factory)
    job_id = submit_api_style(atelier_up, steps=5000, name="busy log")
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    try:
        wait_status(atelier_up, job_id, ("running",))
        for i in range(40):
            repo.add_event(services.sessions, job_id, f"line {i}: " + "a long line that wraps " * 3)
        page.goto(f"{atelier_up}/jobs/{job_id}")
        page.wait_for_function("() => document.getElementById('job-events').children.length >= 40", timeout=20_000)
        state = scroll_state(page)
        assert state["scrollable"] and state["bottomGap"] < 24, f"opens at the newest line: {state}"
        # new lines arrive: followed
        repo.add_event(services.sessions, job_id, "newest while following")
        page.wait_for_function("() => document.getElementById('job-events').textContent"
                               ".includes('newest while following')", timeout=20_000)
        page.wait_for_timeout(100)
        assert scroll_state(page)["bottomGap"] < 24
        # the reader scrolls up: the log stays put and offers a way back
        page.eval_on_selector("#job-events", "ol => { ol.scrollTop = 0; ol.dispatchEvent(new Event('scroll')); }")
        repo.add_event(services.sessions, job_id, "newest while reading")
        page.wait_for_function("() => !document.getElementById('events-newest').hidden", timeout=20_000)
        state = scroll_state(page)
        assert state["top"] == 0 and state["jump"], state
        assert "newest while reading" in (page.text_content("#job-events") or "")
        page.click("#events-newest")
        state = scroll_state(page)
        assert state["bottomGap"] < 24 and not state["jump"], state
        # no line makes the log (or the page) scroll sideways
        repo.add_event(services.sessions, job_id, "x" * 400)
        page.wait_for_function("() => document.getElementById('job-events').textContent.includes('xxxxxxxx')",
                               timeout=20_000)
        assert page.evaluate("() => { const ol = document.getElementById('job-events');"
                             " return ol.scrollWidth <= ol.clientWidth; }")
    finally:
        requests.post(f"{atelier_up}/api/v1/jobs/{job_id}/cancel", timeout=10)
        context.close()
        services.close()
    wait_status(atelier_up, job_id, TERMINAL)


def test_phone_width_has_no_sideways_scroll_and_the_comparison_slider_works(
        browser, atelier_up: str, tmp_path_factory: pytest.TempPathFactory) -> None:  # type: ignore[no-untyped-def]
    """At 390 px no page scrolls sideways (a long job name and an unbreakable log line included); the
    before/after slider of a style result moves with the keyboard; every page is saved as a screenshot
    (desktop and phone, and the phone in dark mode) under SCREENSHOTS_DIR or the test's temporary folder."""
    import os

    from core.jobs import repository as repo

    shots = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    job_id = submit_api_style(atelier_up, steps=6, name="a-rather-long-job-name-without-any-spaces-to-break-it")
    assert wait_status(atelier_up, job_id, TERMINAL) == "succeeded"
    services = up_services(tmp_path_factory)
    try:
        repo.add_event(services.sessions, job_id, "/very/long/path/" + "segment" * 60 + ".png")
    finally:
        services.close()
    requests.post(f"{atelier_up}/api/v1/datasets/demo", timeout=60)
    pages = {"form": "/", "job": f"/jobs/{job_id}", "jobs": "/jobs", "models": "/models", "datasets": "/datasets",
             "workers": "/workers", "not-found": "/docs", "api": "/api/docs"}
    desktop = {"width": 1200, "height": 900}
    for scheme, label, viewport in (("light", "desktop", desktop), ("light", "phone", PHONE), ("dark", "phone", PHONE)):
        with watched_page(browser, viewport=viewport, color_scheme=scheme) as (page, problems):
            for name, path in pages.items():
                page.goto(atelier_up + path)
                page.wait_for_timeout(250)  # the job page's first fetches (plots, log) render
                width = page.evaluate("document.documentElement.scrollWidth")
                if label == "phone":
                    assert width <= 390, f"{path} is {width} px wide at 390 px ({scheme})"
                    nav_rows = page.evaluate("() => new Set([...document.querySelectorAll('.nav a')]"
                                             ".map(a => a.offsetTop)).size")
                    assert nav_rows == 1, f"{path}: the navigation takes {nav_rows} rows"
                page.screenshot(path=str(shots / f"{name}-{label}-{scheme}.jpg"), full_page=True, quality=80)
            assert not problems, problems
    assert len(list(shots.glob("*.jpg"))) >= 3 * len(pages)

    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    try:
        page.goto(f"{atelier_up}/jobs/{job_id}")
        figure = page.locator("[data-compare]").first
        figure.wait_for(state="visible")
        assert figure.locator(".compare-side").is_visible() and figure.locator(".compare-slider").is_hidden()
        figure.locator("[data-mode=slider]").click()
        assert figure.locator(".compare-side").is_hidden() and figure.locator(".compare-slider").is_visible()
        clip = "() => getComputedStyle(document.querySelector('[data-compare] .compare-after')).clipPath"
        assert page.evaluate(clip) == "inset(0px 0px 0px 50%)"
        figure.locator("input[type=range]").focus()
        for _ in range(10):
            page.keyboard.press("ArrowRight")
        assert page.evaluate(clip) == "inset(0px 0px 0px 60%)"
        page.keyboard.press("Home")
        assert page.evaluate(clip) == "inset(0px 0px 0px 0%)", "the whole result shows"
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(shots / "job-slider-phone.png"), full_page=True)
    finally:
        context.close()


# -- run again; every error at once with the files kept (issue 14) ---------------------------------------
def test_run_again_and_edit_and_run_again_reuse_the_stored_inputs(browser, atelier_up: str) -> None:  # type: ignore[no-untyped-def]
    first = submit_api_style(atelier_up, steps=3)
    assert wait_status(atelier_up, first, TERMINAL) == "succeeded"
    original = requests.get(f"{atelier_up}/api/v1/jobs/{first}", timeout=10).json()
    with watched_page(browser, viewport={"width": 1200, "height": 900}) as (page, problems):
        page.goto(f"{atelier_up}/jobs/{first}")
        page.click("#job-rerun button")
        page.wait_for_url(re.compile(r".*/jobs/[0-9a-f-]{36}$"), timeout=30_000)
        again = page.url.rsplit("/", 1)[-1]
        assert again != first
        copy = requests.get(f"{atelier_up}/api/v1/jobs/{again}", timeout=10).json()
        assert copy["params"] == original["params"]
        assert [(i["role"], i["size"]) for i in copy["inputs"]] == [(i["role"], i["size"]) for i in original["inputs"]]

        page.goto(f"{atelier_up}/jobs/{first}")
        page.click("#job-edit-rerun")
        page.wait_for_selector("#rerun-note")
        kept = page.locator("input[name=keep_input]")
        assert kept.count() == 2 and all(kept.nth(i).is_checked() for i in range(2))
        thumb = page.locator(".kept-file img").first
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())
        assert page.input_value("#input-param-steps") == "3"
        page.fill("#input-param-steps", "4")
        page.click("#submit-job")
        page.wait_for_url(re.compile(r".*/jobs/[0-9a-f-]{36}$"), timeout=30_000)
        edited = requests.get(f"{atelier_up}/api/v1/jobs/{page.url.rsplit('/', 1)[-1]}", timeout=10).json()
        assert edited["params"]["steps"] == 4
        assert sorted((i["role"], i["size"]) for i in edited["inputs"]) == \
            sorted((i["role"], i["size"]) for i in original["inputs"])
        assert not problems, problems


def test_every_error_at_once_under_labels_with_the_photo_kept(browser, atelier_up: str) -> None:  # type: ignore[no-untyped-def]
    with watched_page(browser, viewport={"width": 1200, "height": 900}) as (page, problems):
        page.goto(atelier_up + "/")
        assert page.is_checked(f"input[name=example_style][value='{EXAMPLE}']"), "starts on a painting"
        page.wait_for_selector("#job-estimate:not([hidden])", timeout=10_000)
        assert "on cpu" in (page.text_content("#job-estimate") or "")
        page.set_input_files("#input-file-content", str(CHELSEA))
        page.check("input[name=example_style][value='']")  # no painting: one mistake
        page.click("#advanced summary")
        page.fill("#input-param-style_layers", "relu9_9")  # two
        page.fill("#input-param-content_layers", "relu9_9")  # three
        page.fill("#input-param-size", str(SIZE))
        page.fill("#input-param-steps", "3")
        page.click("#submit-job")
        page.wait_for_selector("#form-error")
        assert page.evaluate("document.activeElement.id") == "form-error", "the focus moves to the summary"
        items = page.locator("#form-error .error-summary li").all_text_contents()
        assert len(items) == 3, items
        assert any(i.startswith("Style layers:") for i in items) and any(i.startswith("Style painting:") for i in items)
        assert not any("style_layers" in i for i in items), items
        kept = page.locator("input[name=keep_upload]")
        assert kept.count() == 1 and kept.first.is_checked()
        thumb = page.locator(".kept-file img").first
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())

        # Fix the three, send no file: the kept photo is the content.
        page.check(f"input[name=example_style][value='{EXAMPLE}']")
        page.fill("#input-param-style_layers", "relu1_1,relu2_1")
        page.fill("#input-param-content_layers", "relu4_2")
        page.click("#submit-job")
        page.wait_for_url(re.compile(r".*/jobs/[0-9a-f-]{36}$"), timeout=30_000)
        job = requests.get(f"{atelier_up}/api/v1/jobs/{page.url.rsplit('/', 1)[-1]}", timeout=10).json()
        content = next(i for i in job["inputs"] if i["role"] == "content")
        assert content["size"] == CHELSEA.stat().st_size
        assert not problems, problems


@pytest.fixture(scope="module")
def atelier_up_with_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """`atelier up` with ATELIER_AUTH=on, and a token for owner ``alice`` made with the CLI."""
    tmp_path = tmp_path_factory.mktemp("atelier-up-auth")
    env = base_env(tmp_path, ATELIER_AUTH="on", ATELIER_PREVIEW_EVERY="5", ATELIER_PROGRESS_INTERVAL="0.2")
    assert (migrated := run_cli(["db", "upgrade"], env)).returncode == 0, migrated.stderr
    created = run_cli(["token", "create", "alice"], env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.splitlines()[0].strip()
    for url in _serve_up(env, tmp_path):
        yield url, token


def test_log_in_watch_a_job_finish_from_the_stream_and_retry_a_canceled_one(  # type: ignore[no-untyped-def]
        browser, atelier_up_with_auth: tuple[str, str]) -> None:
    """With auth on: the pages ask for a token, the job page follows the job over its event stream (not
    by polling) to the end, and a canceled job's Retry button appears when it stops and queues it again."""
    base, token = atelier_up_with_auth
    with watched_page(browser, viewport={"width": 1200, "height": 900}) as (page, problems):
        page.goto(base + "/")
        page.wait_for_url(re.compile(r".*/login(\?.*)?$"))
        page.fill("#token", token)
        page.click("form.login-form button[type=submit]")
        page.wait_for_url(lambda url: "/login" not in url)
        assert page.locator("#input-file-content").count() == 1, "logged in: the form"

        submit_style_transfer(page, base)
        page.wait_for_function("() => document.getElementById('job').getAttribute('data-live') === 'stream'",
                               timeout=30_000)
        seen = watch_job_page(page, timeout_s=300)
        assert seen.status == "succeeded", seen.texts
        assert len(seen.running_steps) >= 2, seen.texts
        assert page.get_attribute("#job", "data-live") == "stream", "followed over the stream, never polled"

        # a long job, canceled from its page, then retried from the button that appears
        page.goto(base + "/")
        page.set_input_files("#input-file-content", str(CHELSEA))
        page.click(f"label.example:has(input[value='{EXAMPLE}']) img")
        page.fill("#input-param-size", "32")
        page.fill("#input-param-steps", "5000")
        page.click("#submit-job")
        page.wait_for_url(re.compile(r".*/jobs/[0-9a-f-]{36}$"), timeout=30_000)
        page.wait_for_function("() => document.getElementById('job').getAttribute('data-status') === 'running'",
                               timeout=60_000)
        assert page.locator("#job-actions").is_hidden()
        page.click("#job-cancel button")
        page.wait_for_function("() => document.getElementById('job').getAttribute('data-status') === 'canceled'",
                               timeout=60_000)
        page.locator("#job-retry button").wait_for(state="visible", timeout=10_000)
        page.click("#job-retry button")
        page.wait_for_function("() => ['queued', 'running'].includes(document.getElementById('job')"
                               ".getAttribute('data-status'))", timeout=30_000)
        page.click("#job-cancel button")  # leave the worker free for the next test
        page.wait_for_function("() => document.getElementById('job').getAttribute('data-status') === 'canceled'",
                               timeout=60_000)
        assert not problems, problems
