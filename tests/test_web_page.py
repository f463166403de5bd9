# -*- test-case-name: tests.test_web_page -*-
"""
The web page in a real browser: two real C{twistd -n p2pshare} nodes on
127.0.0.1, each with its web UI on a port of its own, and Debian's
headless Chromium, driven by selenium through chromedriver, showing node
B's page while a big file dropped into A's share travels to B.

Selenium's calls block until the browser answers, so every one runs in a
thread (L{deferToThread}) and the reactor goes on reading the nodes' logs
meanwhile.  Nothing sleeps: each wait is a C{WebDriverWait} polling the
page's DOM for what the page should come to show (an event in the page),
or a node's log line, and each is bounded by a timeout.

Set C{P2P_SCREENSHOT=PATH} to have the test save a picture of the page in
the middle of the transfer (docs/screenshot.png is made so).
"""

from __future__ import annotations

import base64
import filecmp
import os
import random
import re
import shutil
import tempfile
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

# The module, not the class: trial collects every TestCase in this module's
# namespace, and importing TwistdTests by name would run its tests again.
from . import test_twistd as base
from .test_twistd import NodeProcess, free_port

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - the skip says so
    webdriver = None

MiB = 1024 * 1024

#: The file dropped into A's share: big enough, at A's capped upload rate,
#: to be seen in flight for a few seconds.
PATH = "videos/holiday-2026.mkv"
SIZE = 256 * MiB
MAX_RATE = "48M"

#: Seconds for the page to show what a wait looks for.
PAGE_TIMEOUT = 30.0

#: A small file, dropped first.
NOTE = "notes/todo.txt"

#: Seconds for the whole transfer to end and the page to say "in sync".
SYNC_TIMEOUT = 60.0

#: Where to save a picture of the page mid-transfer, if anywhere: read as
#: the module loads, before trial changes into its temporary directory, so
#: a relative path is relative to where the command ran.
SCREENSHOT = (os.path.abspath(os.environ["P2P_SCREENSHOT"])
              if os.environ.get("P2P_SCREENSHOT") else None)

#: Written by the node once its web server listens (docs/api.md).
WEB_UI = re.compile(r"web UI at (?P<url>https?://\S+?)/?$")

#: Flags that let Debian's Chromium run headless as root on a machine
#: whose network is closed: without the background-networking ones it
#: tries Google's hosts at every start and logs the refusals.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,1000", "--hide-scrollbars",
)


def skip_reason() -> Optional[str]:
    """
    Why this machine cannot run the browser test, or C{None} if it can.
    """
    if webdriver is None:
        return "needs selenium (pip install selenium; it is in the test extra)"
    for program, package in (("chromium", "chromium"), ("chromedriver", "chromium-driver")):
        if shutil.which(program) is None:
            return f"needs {program} (apt-get install {package}; .ci/run installs it as root)"
    return None


def write_random_file(path: str, size: int) -> None:
    """
    Write C{size} random bytes to C{path} (at most 1 MiB at a time), dated an hour
    back: the scanner publishes a file at once only when its mtime is not
    new (a file still being written must not travel half-written).
    """
    rng = random.Random(size)
    with open(path, "wb") as f:
        for start in range(0, size, MiB):
            f.write(rng.randbytes(min(MiB, size - start)))
    then = os.stat(path).st_mtime - 3600
    os.utime(path, (then, then))


def in_share(node: NodeProcess, path: str) -> str:
    """
    Where C{path} (with slashes) is in C{node}'s share.
    """
    return os.path.join(node.share, *path.split("/"))


def start_browser(profile: str, log_path: str) -> Any:
    """
    A headless Chromium with a fresh profile, its console kept at every
    level so the test can read it back.  (Blocks: run it in a thread.)
    """
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(shutil.which("chromedriver"), log_output=log_path)
    return webdriver.Chrome(options=options, service=service)


def save_screenshot(driver: Any, path: str) -> None:
    """
    A picture of the whole page, not only the window's part, at C{path},
    by Chromium's own capture (DevTools' Page.captureScreenshot).
    (Blocks: run it in a thread.)
    """
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True, "clip": clip})
    with open(path, "wb") as f:
        f.write(base64.b64decode(shot["data"]))


def bar_value(driver: Any, path: str) -> Optional[tuple]:
    """
    The value and max of the page's progress bar for C{path}, or C{None}
    while it has none.
    """
    bars = driver.find_elements(By.CSS_SELECTOR, "progress[data-path]")
    for bar in bars:
        if bar.get_attribute("data-path") == path:
            return float(bar.get_property("value")), float(bar.get_property("max"))
    return None


def folder_state(driver: Any) -> Optional[str]:
    """
    What the page says of the folder: "in sync", "syncing" or "paused".
    """
    return driver.find_element(By.CSS_SELECTOR, "#folder-state").get_attribute("data-state")


def banner_shown(driver: Any) -> bool:
    """
    Whether the page shows its connection-lost banner.
    """
    return driver.find_element(By.ID, "banner").is_displayed()


def page_errors(console: list) -> list:
    """
    The console's errors but the browser's own reports of requests that
    failed at the network level while a node was away: those the page
    cannot keep the browser from logging.
    """
    return [entry for entry in console
            if entry["level"] == "SEVERE" and entry.get("source") != "network"]


class WebPageTests(unittest.TestCase):
    """
    Node B's page, in Chromium, while A sends B a big file.
    """

    skip = skip_reason()
    timeout = 150

    start_node = base.TwistdTests.start_node
    started = base.TwistdTests.started
    stop_node = base.TwistdTests.stop_node

    def drop(self, node: NodeProcess, path: str, size: int) -> None:
        """
        Put C{size} random bytes at C{path} in C{node}'s share as a person
        would: written elsewhere, then moved in whole.
        """
        scratch = os.path.abspath(self.mktemp())
        os.makedirs(scratch)
        write_random_file(os.path.join(scratch, "file"), size)
        target = in_share(node, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(os.path.join(scratch, "file"), target)

    async def web_url(self, node: NodeProcess) -> str:
        """
        The address of C{node}'s web UI, as it logged it.
        """
        match = await node.wait_for(WEB_UI, timeout=base.START_TIMEOUT)
        return match.group("url")

    async def browser(self) -> Any:
        """
        Start a browser, quit when the test ends (before its nodes stop,
        clean-ups running last-added first).
        """
        profile = tempfile.mkdtemp(prefix="p2p-chromium-")
        self.addCleanup(shutil.rmtree, profile, True)
        log_path = os.path.abspath(self.mktemp())
        driver = await deferToThread(start_browser, profile, log_path)
        self.addCleanup(deferToThread, driver.quit)
        return driver

    def until(self, driver: Any, condition: Callable[[Any], Any], what: str,
              timeout: float = PAGE_TIMEOUT) -> Deferred:
        """
        Poll the page (in a thread) until C{condition(driver)} is true and
        fire with its value; fail saying C{what} was awaited.
        """
        wait = WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=[StaleElementReferenceException])
        return deferToThread(wait.until, condition, f"the page never showed {what}")

    async def test_transfer_seen_live(self) -> None:
        """
        Opened on B, the page lists A among the peers; once a big file is
        dropped into A's share, the file's progress bar rises (seen at two
        values, both short of the end), and at the end the folder shows
        "in sync"; the browser's console logged no error meanwhile.
        """
        options = ["--web", "tcp:0:interface=127.0.0.1"]
        a = await self.started(self.start_node(
            "office", options=options + ["--max-rate", MAX_RATE]))
        b = await self.started(self.start_node("laptop", peers=[a.port], options=options))
        url = await self.web_url(b)
        driver = await self.browser()
        await deferToThread(driver.get, url + "/")

        peer_row = f'#peers tbody tr[data-peer-id="{a.node_id}"]'
        await self.until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, peer_row),
                         f"A ({a.node_id[:12]}) in the peers table")
        await self.until(driver, lambda d: folder_state(d) == "in sync",
                         "an empty folder in sync")

        # A small file first: it shows in the recent changes, by A.
        self.drop(a, NOTE, 4096)
        await self.until(driver, lambda d: d.find_elements(
            By.CSS_SELECTOR, f'#changes li[data-path="{NOTE}"]'), f"{NOTE} among the changes")
        self.assertIn(a.name, driver.find_element(
            By.CSS_SELECTOR, f'#changes li[data-path="{NOTE}"]').text)
        await deferToThread(self.drop, a, PATH, SIZE)

        def moving(after: float) -> Callable[[Any], Any]:
            def check(d: Any) -> Any:
                seen = bar_value(d, PATH)
                return seen if seen and after < seen[0] < seen[1] else False
            return check

        first, size = await self.until(driver, moving(0), f"{PATH} part-way")
        self.assertEqual(size, SIZE)
        second, _ = await self.until(driver, moving(first), f"{PATH} further than {first}")
        self.assertGreater(second, first)
        if SCREENSHOT:
            await deferToThread(save_screenshot, driver, SCREENSHOT)

        def landed(d: Any) -> bool:
            # In sync, and not stale from before the drop: the bar is full.
            seen = bar_value(d, PATH)
            return (folder_state(d) == "in sync"
                    and (seen is None or seen[0] >= seen[1]))

        await self.until(driver, landed, "the folder in sync again", timeout=SYNC_TIMEOUT)
        sent, got = in_share(a, PATH), in_share(b, PATH)
        self.assertTrue(os.path.exists(got), f"the page says in sync, but B has no {PATH}")
        self.assertTrue(await deferToThread(filecmp.cmp, sent, got, False),
                        f"B's copy of {PATH} differs from A's")

        console = await deferToThread(driver.get_log, "browser")
        errors = [entry for entry in console if entry["level"] == "SEVERE"]
        self.assertEqual(errors, [], "the page logged errors in the browser console")

    async def test_connection_lost_and_back(self) -> None:
        """
        When its node stops, the page shows the connection-lost banner; when
        the node runs again (a new process: the page's session is gone with
        the old one), the page reconnects by itself, the banner goes and the
        node is shown live again, with no script error on the way.
        """
        web = ["--web", f"tcp:{free_port()}:interface=127.0.0.1"]
        share = os.path.abspath(self.mktemp())
        os.makedirs(share)
        node = await self.started(self.start_node("laptop", share=share, options=web))
        url = await self.web_url(node)
        driver = await self.browser()
        await deferToThread(driver.get, url + "/")
        live = "#live-dot.live"
        await self.until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, live)
                         and not banner_shown(d), "the node live")

        await self.stop_node(node)
        await self.until(driver, banner_shown, "the connection-lost banner")

        again = await self.started(self.start_node("laptop", share=share, options=web))
        self.assertEqual(await self.web_url(again), url)
        await self.until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, live)
                         and not banner_shown(d)
                         and d.find_element(By.ID, "node-name").text == "laptop",
                         "the node live again")

        console = await deferToThread(driver.get_log, "browser")
        self.assertEqual(page_errors(console), [], "the page logged errors")

    async def test_actions(self) -> None:
        """
        The page's buttons work, with the session and token the node gave
        it: connecting to an address lists the peer; a file A deleted lands
        in B's trash can, and its Restore button brings it back into B's
        share; Pause shows the folder paused and Resume in sync again;
        Rescan is done; no console errors.
        """
        a = await self.started(self.start_node("office"))
        b = await self.started(self.start_node("laptop"))
        driver = await self.browser()
        await deferToThread(driver.get, await self.web_url(b) + "/")
        await self.until(driver, lambda d: folder_state(d) == "in sync", "the folder in sync")

        await deferToThread(self.type_and_submit, driver, f"127.0.0.1:{a.port}")
        peer_row = f'#peers tbody tr[data-peer-id="{a.node_id}"]'
        await self.until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, peer_row),
                         "A in the peers table after Connect")

        self.drop(a, NOTE, 4096)
        await self.until(driver, lambda d: d.find_elements(
            By.CSS_SELECTOR, f'#changes li[data-path="{NOTE}"]'), f"{NOTE} arrived")
        os.unlink(in_share(a, NOTE))
        restore = f'#trash li[data-path="{NOTE}"] button[data-act="restore"]'
        await self.until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, restore),
                         f"{NOTE} in the trash can")
        self.assertFalse(os.path.exists(in_share(b, NOTE)))
        await self.click(driver, restore)
        await self.until(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, restore),
                         f"{NOTE} gone from the trash can")
        self.assertTrue(os.path.exists(in_share(b, NOTE)), f"{NOTE} not restored")

        await self.click(driver, "#pause")
        await self.until(driver, lambda d: folder_state(d) == "paused"
                         and d.find_element(By.ID, "pause").text == "Resume", "the folder paused")
        await self.click(driver, "#pause")
        await self.until(driver, lambda d: folder_state(d) == "in sync"
                         and d.find_element(By.ID, "pause").text == "Pause", "sync resumed")

        await self.click(driver, "#rescan")
        await self.until(driver, lambda d: d.find_element(By.ID, "toast").text
                         == "Folder rescanned", "the rescan done")

        console = await deferToThread(driver.get_log, "browser")
        errors = [entry for entry in console if entry["level"] == "SEVERE"]
        self.assertEqual(errors, [], "the page logged errors in the browser console")

    @staticmethod
    def type_and_submit(driver: Any, address: str) -> None:
        """
        Type C{address} into the Connect box and press Connect.  (Blocks.)
        """
        driver.find_element(By.ID, "connect-address").send_keys(address)
        driver.find_element(By.CSS_SELECTOR, "#connect-form button").click()

    def click(self, driver: Any, selector: str) -> Deferred:
        """
        Click the element C{selector} finds, in a thread.
        """
        return deferToThread(lambda: driver.find_element(By.CSS_SELECTOR, selector).click())
