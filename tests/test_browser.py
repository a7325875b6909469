"""The HTML report opened in a real headless Chromium: every figure decodes, the console is clean.

Needs Debian's chromium and chromium-driver (`apt-get install -y chromium chromium-driver`) and
Selenium (`pip install selenium`). Without them the test fails and says so: the report's
rendering is part of what CI checks.
"""

from pathlib import Path

import pytest

from tests.report_fixtures import written_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
WIDTH = 1280
MAX_HEIGHT = 20_000  # a taller window makes the screenshot too large to be useful
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _require_browser() -> None:
    """Fail with the install commands when the browser, its driver or Selenium is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found; install them with "
            "`apt-get install -y chromium chromium-driver`"
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail("selenium is not installed; install it with `pip install selenium`")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium driven through the system chromedriver; nothing is downloaded."""
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-extensions",
        "--no-first-run",
        "--disable-sync",
        f"--window-size={WIDTH},1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def opened(browser, tmp_path_factory):
    """The report's HTML opened in the browser, with the images it finished loading."""
    html = written_report(tmp_path_factory)[0]
    browser.get(html.as_uri())
    browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all([...document.images].map(i => i.decode().catch(() => null)))"
        ".then(() => done(true));"
    )
    return browser


def test_every_figure_decodes_with_a_size(opened, tmp_path_factory):
    figures = written_report(tmp_path_factory)[2:]
    images = opened.execute_script(
        "return [...document.images].map(i => ({id: i.closest('figure').id, complete: i.complete,"
        " width: i.naturalWidth, height: i.naturalHeight, src: i.src.slice(0, 22)}));"
    )
    assert [i["id"] for i in images] == [path.stem for path in figures]
    for image in images:
        assert image["complete"], image["id"]
        assert image["width"] > 0 and image["height"] > 0, image["id"]
        assert image["src"] == "data:image/png;base64,", image["id"]


def test_the_console_has_no_errors(opened):
    severe = [entry for entry in opened.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []


def test_the_page_fits_the_window_width(opened):
    # nothing may force a horizontal scroll of the whole page; wide tables scroll in their box
    widths = opened.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth];"
    )
    assert widths[0] <= widths[1]


def test_a_screenshot_of_the_whole_page_is_saved(opened):
    height = opened.execute_script("return document.documentElement.scrollHeight;")
    opened.set_window_size(WIDTH, min(int(height) + 200, MAX_HEIGHT))
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / "report.png"
    target.unlink(missing_ok=True)
    assert opened.save_screenshot(str(target))
    data = target.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    width = int.from_bytes(data[16:20], "big")
    assert width >= WIDTH // 2  # a real page capture, not a blank stub
