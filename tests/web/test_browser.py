"""The web site in a real browser (Debian's chromium + chromedriver, driven by selenium, headless) against
``python -m demo_game --local --web`` with its headless bots: log in, a wrong password, invite bob@na, the live
steps, the match, the history row, a refusal with its reason, the operator console and its CSV export.

Screenshots go to the test's folder, and also to ``$GAMESDK_SCREENSHOT_DIR`` when set (docs/web-*.png come
from there).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")


class Demo:
    """``python -m demo_game --local --web`` in its own process, its output collected by a reader thread."""

    def __init__(self, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "demo_game", "--local", "--web", "--web-port", "0", "--headless",
             "--sim-latency-ms", "0", "--sim-jitter-ms", "0", *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.banner = threading.Event()
        self.url = self.user = self.password = ""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if not self.banner.wait(60):
            self.stop()
            raise AssertionError("the demo printed no lobby URL:\n" + "".join(self.lines))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            match = re.search(r"web lobby of region eu: (http://\S+?)/\s+log in as (\w+) / (\S+)", line)
            if match:
                self.url, self.user, self.password = match.groups()
                self.banner.set()

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(5)
        return "".join(self.lines)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
                 "--disable-sync", "--no-first-run", "--disable-extensions", "--window-size=1100,1300",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-', dir=tmp_path)}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: Any, tmp_path: Path, name: str) -> None:
    driver.save_screenshot(str(tmp_path / f"{name}.png"))
    extra = os.environ.get("GAMESDK_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(extra) / f"{name}.png"))


def log_in(driver: Any, url: str, user: str, password: str, *, timeout: float = 30.0,
           submit_late_s: float = 0.0) -> None:
    """Submit the login form and wait for its answer: the page after it (a logged-in page with ``#logout``, or
    the form again with ``#error``). The next navigation must not start earlier: it would replace the login
    before its session cookie arrives. ``click()`` returns at once when the browser starts the form's navigation
    late (a loaded host); ``submit_late_s`` makes the page do that on purpose."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/login")
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    button = driver.find_element(By.ID, "login")
    if submit_late_s > 0:
        driver.execute_script(
            "const form = arguments[0].form;"
            "form.addEventListener('submit', e => { e.preventDefault(); setTimeout(() => form.submit(), arguments[1]); });",
            button, int(submit_late_s * 1000))
    button.click()
    WebDriverWait(driver, timeout).until(_gone(button))  # the login page is gone
    WebDriverWait(driver, timeout).until(expected_conditions.any_of(
        expected_conditions.presence_of_element_located((By.ID, "logout")),
        expected_conditions.presence_of_element_located((By.ID, "error"))))


def _gone(element: Any) -> Callable[[Any], bool]:
    """A wait condition: ``element``'s page has been replaced. Selenium's ``staleness_of`` expects the stale-element
    error; chromedriver, asked while the next page is coming in, can answer instead that the node "does not belong
    to the document" (an unknown error: seen once in CI), which says the same."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    def check(_driver: Any) -> bool:
        try:
            element.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    return check


def wait_for(driver: Any, css: str, timeout: float = 30.0) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))


def lobby_with_client_online(driver: Any, url: str) -> None:
    """Reload the lobby until alice's game client shows online (bounded: about 30 s)."""
    from selenium.webdriver.common.by import By

    for _ in range(60):
        driver.get(url + "/")
        state = wait_for(driver, "#client-state").text  # the lobby's own line: the login has landed
        if "online" in state and "offline" not in state:
            return
        threading.Event().wait(0.5)
    raise AssertionError(f"alice's game client never showed online: {driver.find_element(By.ID, 'client-state').text}")


def invite(driver: Any, target: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, "target")
    field.clear()
    field.send_keys(target)
    driver.find_element(By.ID, "invite").click()


def test_browser_login_invite_match_history_console(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    demo = Demo("--duration", "2", "--web-linger-s", "60")
    try:
        url = demo.url
        log_in(browser, url, demo.user, "not-the-password")
        assert "wrong account name or password" in wait_for(browser, "#error").text
        shot(browser, tmp_path, "web-wrong-password")

        log_in(browser, url, demo.user, demo.password)
        lobby_with_client_online(browser, url)
        assert "alice@eu.gamesdk.test" in browser.find_element(By.ID, "online").text
        shot(browser, tmp_path, "web-lobby")

        invite(browser, "bob@na.gamesdk.test")
        established = wait_for(browser, "#steps li[data-step=established]", 60)
        steps = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#steps li")]
        assert any("reserved in eu.gamesdk.test" in s for s in steps), steps
        assert any("reserved in na.gamesdk.test" in s for s in steps), steps
        assert "established" in established.text
        shot(browser, tmp_path, "web-invite-live")

        for _ in range(120):  # bounded: the 2 s match, then the BYE and the billing STOP
            if demo.saw("the web site stays up"):
                break
            threading.Event().wait(0.5)
        assert demo.saw("the web page asks to invite bob@na.gamesdk.test"), "".join(demo.lines)
        assert demo.saw("final score"), "".join(demo.lines)
        browser.get(url + "/history")
        rows = browser.find_elements(By.CSS_SELECTOR, "#history tr.match")
        assert rows and "sip:bob@na.gamesdk.test" in rows[0].text and "bye-local" in rows[0].text
        shot(browser, tmp_path, "web-history")

        browser.find_element(By.ID, "logout").click()
        wait_for(browser, "#login")
        log_in(browser, url, "op", "op-demo-pw")
        wait_for(browser, "#logout")  # the login's redirect has landed before the next navigation
        browser.get(url + "/console")
        assert "eu-fiber" in wait_for(browser, "#capacity").text
        assert "sip:alice@eu.gamesdk.test" in browser.find_element(By.ID, "billing").text
        assert "na.gamesdk.test" in browser.find_element(By.ID, "peers").text
        shot(browser, tmp_path, "web-console")
        csv_text = browser.execute_async_script(
            "const done = arguments[0];"
            "fetch(document.getElementById('csv').href).then(r => r.text()).then(done);")
        header, first = csv_text.splitlines()[:2]
        assert "call_id" in header or "player" in header
        assert "sip:alice@eu.gamesdk.test" in first
    finally:
        output = demo.stop()
    assert "established" in output or "final score" in output


def test_browser_shows_a_refusal_with_its_reason(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    demo = Demo("--duration", "2", "--access-kbps", "20")
    try:
        # The browser starts the login's navigation late, as it did on a loaded host: the lobby must wait for it.
        log_in(browser, demo.url, demo.user, demo.password, submit_late_s=1.0)
        lobby_with_client_online(browser, demo.url)
        invite(browser, "bob@na.gamesdk.test")
        refused = wait_for(browser, "#steps li[data-step=refused]", 60)
        text = refused.text
        assert "580" in text and "uplink" in text and "eu.gamesdk.test" in text, text
        assert "refused" in browser.find_element(By.ID, "outcome").text
        shot(browser, tmp_path, "web-refused")
    finally:
        demo.stop()
