"""A headless Chromium driven over the DevTools protocol (CDP) with ``websocket-client``: load a page, collect
console errors and exceptions, evaluate JavaScript, take screenshots. Used by the report tests.

>>> with Chromium() as page:                                          # doctest: +SKIP
...     page.open(Path("runs/demo/report.html").resolve().as_uri())
...     page.evaluate("document.title"), page.errors
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The Chromium executable (``$COTSCOPE_CHROMIUM`` or the first of :data:`CANDIDATES` on ``PATH``)."""
    env = os.environ.get("COTSCOPE_CHROMIUM")
    if env:
        return env
    for name in CANDIDATES:
        if path := shutil.which(name):
            return path
    return None


class Chromium:
    """One headless Chromium with one page. ``errors`` collects console errors, uncaught exceptions and
    error-level log entries (failed loads, …) seen since :meth:`open`."""

    def __init__(self, width: int = 1400, height: int = 1000, timeout: float = 60.0) -> None:
        self.width, self.height, self.timeout = width, height, timeout
        self.errors: list[str] = []
        self._id = 0

    def __enter__(self) -> Chromium:
        import websocket

        exe = find_chromium()
        if exe is None:
            raise FileNotFoundError(
                "no chromium on PATH; install Debian's `chromium` package (scripts/setup_env.sh "
                "does as root) or set COTSCOPE_CHROMIUM"
            )
        self._profile = tempfile.mkdtemp(prefix="cotscope-chromium-")
        args = [
            exe,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--mute-audio",
            "--hide-scrollbars",
            "--remote-debugging-port=0",
            "--remote-allow-origins=*",
            f"--user-data-dir={self._profile}",
            f"--window-size={self.width},{self.height}",
            "about:blank",
        ]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"chromium did not start (exit code {self._proc.poll()})")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=self.timeout) as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        self._ws = websocket.create_connection(
            pages[0]["webSocketDebuggerUrl"], timeout=self.timeout, suppress_origin=True, max_size=None
        )
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )
        return self

    def __exit__(self, *exc: Any) -> None:
        ws = getattr(self, "_ws", None)
        if ws is not None:
            ws.close()
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(getattr(self, "_profile", ""), ignore_errors=True)

    # -- protocol ---------------------------------------------------------------------------------
    def _event(self, msg: dict[str, Any]) -> None:
        m, p = msg.get("method"), msg.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append(
                "console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            )
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.errors.append(f"exception: {d.get('text')} {d.get('exception', {}).get('description', '')}")
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            self.errors.append(f"log: {e.get('source')}: {e.get('text')} {e.get('url', '')}")

    def _recv(self) -> dict[str, Any]:
        msg = json.loads(self._ws.recv())
        if "method" in msg:
            self._event(msg)
        return msg

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Call a CDP method and return its result (events that arrive meanwhile are recorded)."""
        self._id += 1
        mid = self._id
        self._ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = self._recv()
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def wait_event(self, method: str) -> dict[str, Any]:
        while True:
            msg = self._recv()
            if msg.get("method") == method:
                return msg.get("params", {})

    # -- page -------------------------------------------------------------------------------------
    def open(self, url: str) -> None:
        """Navigate and wait for the load event."""
        self.errors.clear()
        res = self.send("Page.navigate", url=url)
        if res.get("errorText"):
            raise RuntimeError(f"cannot open {url}: {res['errorText']}")
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str, await_promise: bool = True) -> Any:
        """The JSON value of a JavaScript expression (a promise is awaited)."""
        res = self.send("Runtime.evaluate", expression=expression, awaitPromise=await_promise, returnByValue=True)
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            raise RuntimeError(f"{d.get('text')} {d.get('exception', {}).get('description', '')}")
        return res.get("result", {}).get("value")

    def screenshot(self, path: str | Path, full_page: bool = False) -> Path:
        """A PNG of the viewport (or of the whole page, ``full_page``)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            w, h = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params.update(clip={"x": 0, "y": 0, "width": w, "height": h, "scale": 1}, captureBeyondViewport=True)
        data = self.send("Page.captureScreenshot", **params)["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path
