"""The web UI in a real browser (Debian's headless chromium via Playwright): sign in with an API key,
upload a table, chat, approve the plan, and see the worker's results — metrics, confusion matrix,
PR curve — on the page."""

import re
import shutil
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from poise.pipelines.api.main import create_app
from poise.pipelines.settings import Settings
from poise.pipelines.worker import Worker
from poise.registry.keys import create_key

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]
SCREENSHOT_COPY = Path("/tmp/poise_ui_result.png")
SECOND = 1000  # Playwright timeouts are in milliseconds
HOSTILE = '<img src=x onerror="window.pwned=1"> **bold** [link](javascript:alert(1))'


@pytest.fixture
def served_ui(poise_home):
    """The API app (with /ui) under uvicorn on a free port, and a worker thread; both stopped afterwards."""
    settings = Settings(home=poise_home)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning"))
    server_thread = threading.Thread(target=server.run, daemon=True)
    server_thread.start()
    stop = threading.Event()
    worker_thread = threading.Thread(target=Worker(settings, poll_seconds=0.5).run_forever, args=(stop,), daemon=True)
    worker_thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    key = create_key(settings.db_url, "ui-test", ["read", "submit"])[1]
    try:
        yield f"http://127.0.0.1:{port}/ui/", key
    finally:
        stop.set()
        server.should_exit = True
        worker_thread.join(timeout=120)
        server_thread.join(timeout=10)


@pytest.fixture
def page():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            yield page
        finally:
            browser.close()


@pytest.mark.slow
def test_upload_chat_approve_and_see_the_results(served_ui, page, churn_csv, tmp_path):
    from playwright.sync_api import expect

    url, key = served_ui
    page.goto(url, timeout=120 * SECOND)
    expect(page.locator("#sign-in")).to_be_visible(timeout=30 * SECOND)  # not signed in: the login page
    page.locator("#api-key").fill("poise_0123456789ab_not-a-key")
    page.locator("#sign-in").click()
    expect(page.locator("#sign-in-error")).to_contain_text("invalid or revoked API key")
    page.locator("#api-key").fill(key)
    page.locator("#sign-in").click()
    chat = page.locator("#chat")
    page.locator("#message textarea").fill(HOSTILE)
    page.locator("#send").click()
    expect(chat).to_contain_text("Which file should I train on?", timeout=60 * SECOND)
    expect(chat).to_contain_text(HOSTILE)  # shown literally: no tag, no bold, no link
    assert chat.locator("img, strong, a[href^='javascript']").count() == 0
    assert page.evaluate("window.pwned") is None

    page.locator("#upload input[type=file]").set_input_files(str(churn_csv))
    expect(chat).to_contain_text("Which column should I predict?", timeout=60 * SECOND)
    expect(chat).to_contain_text("churned", timeout=5 * SECOND)  # the column list

    page.locator("#message textarea").fill("predict churned in 15 seconds")
    page.locator("#send").click()
    expect(chat).to_contain_text("is queued", timeout=60 * SECOND)
    plan = page.locator("#plan")
    expect(plan).to_contain_text("waiting for your approval", timeout=120 * SECOND)  # the worker profiled the data
    expect(plan).to_contain_text("target: churned")
    expect(chat).to_contain_text("Press 'Approve plan'")

    page.locator("#approve").click()
    status = page.locator("#job-status")
    expect(status).to_contain_text("succeeded", timeout=240 * SECOND)
    metrics = page.locator("#metrics")
    expect(metrics).to_be_visible(timeout=30 * SECOND)
    expect(metrics).to_contain_text("macro_f1")
    expect(page.locator("#confusion-matrix img")).to_be_visible(timeout=30 * SECOND)
    expect(page.locator("#pr-curve img")).to_be_visible()
    expect(page.locator("#details")).to_contain_text("Decision threshold")
    expect(page.locator("#details")).to_contain_text("MLflow run")
    expect(page.locator("#summary textarea")).not_to_have_value("")
    expect(page.locator("#steps")).to_contain_text("register")

    screenshot = tmp_path / "ui_result.png"
    page.screenshot(path=str(screenshot), full_page=True)
    shutil.copyfile(screenshot, SCREENSHOT_COPY)
    macro_f1 = re.search(r"macro_f1\s+([0-9.]+)", metrics.inner_text())
    assert macro_f1 and float(macro_f1.group(1)) > 0.5, metrics.inner_text()

    page.get_by_role("tab", name="Models").click()
    models = page.locator("#models")
    expect(models).to_contain_text("customers-churned", timeout=30 * SECOND)
    expect(models).to_contain_text("not checked yet")
