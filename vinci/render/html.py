"""Render HTML with Selenium driving Debian's Chromium and chromedriver (headless).

`Browser` is one warm Chromium that a worker reuses across jobs. Each job writes its page to
a fresh file in the worker's scratch directory and loads it from there (no length limit, unlike
a `data:` URL); a render whose final URL is not that file (a redirect, a page that did not
load) fails with a `WrongPage` error. Every job runs in a fresh tab, the tab of the job
before is closed, and the file origin's storage and all cookies are cleared after each job,
so `window.name`, history, cookies and storage never carry over. The page sees only what the
worker sees (bubblewrap's or `mounts.enter_view`'s read-only view: system files, no home, no
data); under a root worker Chromium runs as the overflow uid, so it reads only
world-readable files.
The network is blocked in the browser itself (all traffic goes to a dead proxy, loopback
included, and host resolution fails) on top of the worker's network namespace.
`alert`/`confirm`/`prompt`/`print`/`window.open` are replaced before any page script runs,
and any dialog that still opens is accepted. JavaScript that never ends makes the page load
time out; the worker then kills this browser's whole process group (closing the WebDriver
connection and chromedriver's pipes) and starts a new one.
Memory is capped per Chromium process (`SandboxLimits.html_memory_mb`, as RLIMIT_DATA set
on chromedriver and inherited by every Chromium process, and as V8's heap limit), so a page
that allocates without end gets failed allocations or a crashed tab.
Screenshots are the viewport width by the page's full height, capped at
`RenderOptions.html_max_height` (a taller page is cut, not failed), at device scale 1: the
window is resized to that height and the page settles (two animation frames) before the
capture, and CSS transitions/animations are switched off, so the same page gives the same
pixels in a warm browser and in a fresh one.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import urllib.parse
from typing import Optional

from PIL import Image

from vinci.render.options import RenderOptions, SandboxLimits
from vinci.render.protocol import on_white
from vinci.render.result import RenderFailure

log = logging.getLogger(__name__)

CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
    "--mute-audio",
    "--disable-breakpad",
    "--disable-crash-reporter",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--proxy-server=http://127.0.0.1:9",  # a closed port: every request fails at once
    "--proxy-bypass-list=<-loopback>",  # ... loopback included
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--disk-cache-size=1048576",  # the profile lives in RAM-backed /tmp
)
NEUTRALISE = """
(() => {
  const none = () => undefined;
  for (const name of ["alert", "print"]) window[name] = none;
  window.confirm = () => false;
  window.prompt = () => null;
  window.open = () => null;
})();
"""
FREEZE = """
const style = document.createElement("style");
style.textContent = "*, *::before, *::after { transition: none !important; animation: none !important;"
  + " caret-color: transparent !important; }";
(document.head || document.documentElement).appendChild(style);
"""
SETTLE = "const done = arguments[arguments.length - 1]; requestAnimationFrame(() => requestAnimationFrame(done));"
PAGE_HEIGHT = (
    "return Math.max(document.documentElement ? document.documentElement.scrollHeight : 0,"
    " document.body ? document.body.scrollHeight : 0)"
)


def executables() -> tuple[str, str]:
    """(chromium, chromedriver) paths; RenderFailure 'unsupported' when either is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        raise RenderFailure("unsupported", "html rendering needs chromium and chromedriver installed")
    return chromium, driver


def wrong_page(final_url: str) -> RenderFailure:
    """The named failure of a render that did not end on its own page."""
    return RenderFailure("crash", f"WrongPage: the render ended on {final_url[:120]!r}, not on the job's page")


class Browser:
    """One warm headless Chromium; `render` is one job, `kill` tears the browser down.
    uid: run chromedriver and Chromium as this uid (a root worker passes the overflow uid)."""

    def __init__(self, root: Optional[str] = None, memory_mb: int = SandboxLimits.html_memory_mb, uid: Optional[int] = None):
        self.root = root
        self.memory_mb = memory_mb  # RLIMIT_DATA of every Chromium process; V8 heap = a quarter
        self.uid = uid
        self.driver = None
        self.profile: Optional[str] = None
        self.jobs = 0  # pages rendered by this Chromium (the first one reuses the start tab)

    def start(self, options: RenderOptions) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        chromium, driver_path = executables()
        self.profile = tempfile.mkdtemp(prefix="chrome-", dir=self.root)
        if self.uid is not None:
            os.chown(self.profile, self.uid, self.uid)
        chrome = webdriver.ChromeOptions()
        chrome.binary_location = chromium
        for flag in CHROME_FLAGS:
            chrome.add_argument(flag)
        chrome.add_argument(f"--user-data-dir={self.profile}")
        chrome.add_argument(f"--js-flags=--max-old-space-size={max(16, self.memory_mb // 4)}")
        chrome.add_argument(f"--window-size={options.html_width},{options.html_height}")
        chrome.set_capability("unhandledPromptBehavior", "accept")
        chrome.add_experimental_option("excludeSwitches", ["disable-popup-blocking", "enable-automation"])
        chrome.page_load_strategy = "normal"
        data = self.memory_mb << 20

        uid = self.uid

        def limit_memory():  # runs in chromedriver before exec; Chromium inherits it
            resource.setrlimit(resource.RLIMIT_DATA, (data, data))
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)

        popen = {"start_new_session": True, "preexec_fn": limit_memory}
        # Chromium puts its singleton socket under TMPDIR (a unix socket path has 107 bytes at most)
        tmp = self.profile if uid is not None else os.environ.get("TMPDIR", "/tmp")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.profile, "TMPDIR": tmp, "LANG": "C.UTF-8"}
        service = Service(driver_path, log_output=subprocess.DEVNULL, popen_kw=popen, env=env)
        self.driver = webdriver.Chrome(service=service, options=chrome)
        self.driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "deny"})
        self.jobs = 0

    def _fresh_tab(self) -> None:
        """A new tab for this job (no window.name, history or opener from the last one), with
        every other tab closed and the page scripts neutralised before they run."""
        driver = self.driver
        if self.jobs:
            old = driver.window_handles
            driver.switch_to.new_window("tab")
            fresh = driver.current_window_handle
            for handle in old:
                driver.switch_to.window(handle)
                driver.close()
            driver.switch_to.window(fresh)
        self.jobs += 1
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": NEUTRALISE})

    def _forget(self) -> None:
        """Clear what a page may have stored: file-origin storage, cookies and the cache."""
        driver = self.driver
        driver.execute_cdp_cmd("Storage.clearDataForOrigin", {"origin": "file://", "storageTypes": "all"})
        driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
        driver.execute_cdp_cmd("Network.clearBrowserCache", {})

    def _write_page(self, code: str) -> str:
        """The job's page as a file of its own in the worker's scratch; its file: URL."""
        folder = tempfile.mkdtemp(prefix="page-", dir=self.root)
        os.chmod(folder, 0o755)  # Chromium may run as another uid than the worker
        path = os.path.join(folder, "index.html")
        with open(path, "w", encoding="utf-8") as page:
            page.write(code)
        os.chmod(path, 0o644)
        return "file://" + urllib.parse.quote(path)

    def render(self, code: str, options: RenderOptions, timeout: float) -> Image.Image:
        from selenium.common.exceptions import TimeoutException, WebDriverException

        if self.driver is None:
            self.start(options)
        driver = self.driver
        width = options.html_width
        url = self._write_page(code)
        try:
            self._fresh_tab()
            driver.set_page_load_timeout(max(timeout, 0.5))
            driver.set_script_timeout(max(timeout, 0.5))
            driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": options.html_height, "deviceScaleFactor": 1, "mobile": False},
            )
            driver.get(url)
            self._check_url(url)
            driver.execute_script(FREEZE)  # a screenshot must not catch a transition midway
            height = options.html_height
            if options.html_full_page:
                page = int(driver.execute_script(PAGE_HEIGHT) or 0)
                height = max(height, min(page, options.html_max_height))
            height = min(height, max(1, options.max_pixels // width), options.max_side)
            if height != options.html_height:  # lay the page out once in a window of the final size
                driver.execute_cdp_cmd(
                    "Emulation.setDeviceMetricsOverride",
                    {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                )
            driver.execute_async_script(SETTLE)
            self._check_url(url)
            shot = driver.execute_cdp_cmd(
                "Page.captureScreenshot",
                {"format": "png", "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}},
            )
            self._check_url(url)  # a navigation that started before the capture
            self._forget()
        except TimeoutException:
            self.kill()
            raise RenderFailure("timeout", f"page did not finish loading within {timeout:g}s") from None
        except WebDriverException as error:
            self.kill()
            message = (error.msg or type(error).__name__).strip().splitlines()[0]
            kind = "timeout" if "timeout" in message.lower() else "crash"
            raise RenderFailure(kind, f"chromium: {message}"[:300]) from None
        except RenderFailure:
            self._forget()
            raise
        finally:
            shutil.rmtree(os.path.dirname(url.removeprefix("file://")), ignore_errors=True)
        image = Image.open(io.BytesIO(base64.b64decode(shot["data"])))
        return on_white(image)

    def _check_url(self, url: str) -> None:
        final = self.driver.current_url
        if final.split("#", 1)[0] != url:
            raise wrong_page(final)

    def pids(self) -> tuple[int, ...]:
        """The chromedriver pid (the one child the worker must not reap behind Popen's back)."""
        process = getattr(getattr(self.driver, "service", None), "process", None)
        return (process.pid,) if process is not None else ()

    def kill(self) -> None:
        """Kill chromedriver and every Chromium process (they share its process group), and
        close what the worker held of them: the WebDriver connection and chromedriver's pipes."""
        driver, self.driver = self.driver, None
        if driver is not None:
            process = getattr(driver.service, "process", None)
            if process is not None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    log.debug("chromedriver group already gone")
                process.wait()
                for stream in (process.stdin, process.stdout, process.stderr):
                    if stream is not None:
                        stream.close()
            driver.command_executor.close()
        if self.profile:
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile = None

    def quit(self) -> None:
        """Polite shutdown (used by the naive baseline); falls back to kill."""
        if self.driver is not None:
            try:
                self.driver.quit()
            finally:
                self.kill()
