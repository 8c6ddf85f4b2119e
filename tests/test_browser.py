"""What a person does, in a real browser against a real `atelier up`: fill the style-transfer form
(upload a photo, click an example painting), submit, watch the job page move on its own (step numbers
rising, a preview appearing), then see the result with its download link and the loss curve.

Headless Chromium comes from the system package (`apt-get install chromium`); Playwright only drives
it, it never downloads a browser. A missing Chromium fails the test with the command to run; it never
skips, so CI cannot pass without having looked.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.stack import Proc, base_env

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
    context = browser.new_context(viewport={"width": 1200, "height": 900}, accept_downloads=False)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
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
        got = context.request.get(base_url + href if href.startswith("/") else href)
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
    finally:
        context.close()


def test_a_person_runs_a_style_transfer_from_the_form(browser,  # type: ignore[no-untyped-def]
                                                     atelier_up: str) -> None:
    check_form_to_result(browser, atelier_up)


def test_one_click_demo_training_plots_losses_shows_samples_and_cancels(browser,  # type: ignore[no-untyped-def]
                                                          atelier_up: str) -> None:
    """The datasets page's demo button registers the demo dataset and lands on a running CycleGAN job;
    the job page's cancel button (JavaScript, through the API) stops it."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
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
        assert abs(w / h - 1.5) < 0.02, (w, h)
        page.click("#job-cancel button")
        page.wait_for_function("() => document.getElementById('job').getAttribute('data-status') === 'canceled'",
                               timeout=120_000)
        assert page.locator("#job-cancel").is_hidden()
        assert (page.text_content("#job-progress-text") or "").startswith("Canceled at step")

        page.goto(atelier_up + "/datasets")
        assert page.locator("table.resources-table tbody tr").count() >= 1
        assert "demo" in (page.text_content("table.resources-table") or "")
        assert not problems, f"browser console errors: {problems}"
    finally:
        context.close()


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
