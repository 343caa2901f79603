"""The balancing notebook in a real browser, as a person would use it.

JupyterLab runs headless on loopback (a free port, a random token, its config, data, runtime,
settings and workspace dirs in a temp dir, the kernel pinned to this venv's python) on a temp
copy of ``notebooks/02_load_balancing.ipynb``; Debian's chromium, driven by Playwright (no
browser download), opens it, runs all cells, and checks the panel's widgets and plots rendered.
Then it moves the ``connections`` weight slider with the keyboard, checks the plots are marked
out of date, presses the panel's Run button and checks the status is up to date again and the
plot changed.

Screenshots, the server log and the browser console go to ``artifacts/browser/`` (the root is
``$LABKIT_ARTIFACTS`` when set). ``make test`` installs chromium; without chromium or
playwright the test skips with the reason, unless ``LABKIT_REQUIRE_BROWSER=1`` (set by
``.ci/run``), when it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "02_load_balancing.ipynb"
CHROMIUM = Path(os.environ.get("LABKIT_CHROMIUM", "/usr/bin/chromium"))
# Known good on a closed network as root: without the background-networking flags chromium
# keeps trying to reach Google's services and stalls.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_S = 90.0
# generous: a loaded 2-core machine; the whole test is bounded by its pytest timeout
RUN_ALL_MS = 240_000
RERUN_MS = 120_000
UI_MS = 60_000
PANEL_LABELS = (
    "strategy",
    "response_time",
    "cpu",
    "connections",
    "errors",
    "load req/s",
    "workers",
)
FRESH_RE = re.compile(r"up to date \(run (\d+)\)")


def _unavailable(reason: str) -> NoReturn:
    """Skip locally; fail where the browser test is required (CI)."""
    if os.environ.get("LABKIT_REQUIRE_BROWSER", "").strip() not in ("", "0"):
        pytest.fail(f"{reason} (LABKIT_REQUIRE_BROWSER is set: `make test` installs it)")
    pytest.skip(reason)


def _artifacts_dir() -> Path:
    root = Path(os.environ.get("LABKIT_ARTIFACTS") or ROOT / "artifacts")
    out = root / "browser"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


@dataclass
class LabServer:
    url: str
    token: str
    root: Path
    log: Path
    process: subprocess.Popen[bytes]

    def request(self, method: str, path: str, timeout: float = 5.0) -> int:
        req = urllib.request.Request(
            f"{self.url}{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # loopback only
            return int(resp.status)

    def kernel_commands(self) -> list[list[str]]:
        """The command lines of the kernels this server started."""
        import psutil

        found = []
        for proc in psutil.Process(self.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                cmd = proc.cmdline()
                if "ipykernel_launcher" in cmd:
                    found.append(cmd)
        return found


def _prepare(tmp: Path) -> tuple[Path, dict[str, str], list[str]]:
    """The notebook copy, the server's environment and the isolated dirs it uses."""
    root, config, data, runtime = tmp / "root", tmp / "config", tmp / "data", tmp / "runtime"
    settings, workspaces, ipython = tmp / "settings", tmp / "workspaces", tmp / "ipython"
    kernels = tmp / "path"
    for d in (root, config, data, runtime, settings, workspaces, ipython, kernels):
        d.mkdir(parents=True)
    # a clean copy: no saved outputs or execution counts, so "every prompt has a number" means
    # this session ran it; the committed notebook is never touched
    nb = json.loads(NOTEBOOK.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    (root / NOTEBOOK.name).write_text(json.dumps(nb, indent=1))
    # the kernel the notebook asks for (python3) is this interpreter, whatever the user has:
    # JUPYTER_PATH comes before the user's and the environment's data dirs
    _write_json(
        kernels / "kernels" / "python3" / "kernel.json",
        {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (labkit venv)",
            "language": "python",
        },
    )
    # no news or update pop-ups; every cell kept in the DOM (no virtual scrolling)
    _write_json(
        settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings",
        {"fetchNews": "false", "checkForUpdates": False},
    )
    _write_json(
        settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings",
        {"windowingMode": "none"},
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "JPY_"))}
    env.pop("MPLBACKEND", None)  # as in a user's Jupyter: the inline backend
    env.update(
        JUPYTER_CONFIG_DIR=str(config),
        JUPYTER_DATA_DIR=str(data),
        JUPYTER_RUNTIME_DIR=str(runtime),
        JUPYTER_PATH=str(kernels),
        JUPYTER_PLATFORM_DIRS="0",
        IPYTHONDIR=str(ipython),
        LABKIT_QUICK="1",
        PYTHONUNBUFFERED="1",
    )
    lab_args = [
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={workspaces}",
        "--LabApp.news_url=None",
    ]
    return root, env, lab_args


def _stop(server: LabServer) -> None:
    """Shut down the kernels and the server; kill whatever is left (its group, its kernels)."""
    import psutil

    try:
        procs = [psutil.Process(server.process.pid)]
        procs += procs[0].children(recursive=True)
    except psutil.Error:
        procs = []
    if server.process.poll() is None:
        with contextlib.suppress(OSError, urllib.error.URLError):
            server.request("POST", "/api/shutdown")  # stops the kernels too
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(timeout=20)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if server.process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(timeout=10)
    # kernels run in sessions of their own, so the group kill does not reach them
    alive = [p for p in procs if p.is_running()]
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=10)


@pytest.fixture
def lab_server(tmp_path: Path) -> Iterator[LabServer]:
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        _unavailable("jupyterlab is not installed in this environment")
    root, env, lab_args = _prepare(tmp_path)
    port, token = _free_port(), secrets.token_hex(24)
    log = tmp_path / "jupyter-server.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        *lab_args,
    ]
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            cmd,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as one
        )
    server = LabServer(f"http://127.0.0.1:{port}", token, root, log, process)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"jupyter lab exited ({process.returncode}):\n{_tail(log)}")
            with contextlib.suppress(OSError, urllib.error.URLError):
                if server.request("GET", "/api/status", timeout=2) == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab not ready in {SERVER_START_S:.0f} s:\n{_tail(log)}")
            time.sleep(0.5)
        yield server
    finally:
        _stop(server)
        with contextlib.suppress(OSError):
            shutil.copy(log, _artifacts_dir() / log.name)


def _tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


# -- the page ----------------------------------------------------------------------------------

# every code cell has an execution count (the copy has none saved), or a cell failed (Run All
# stops there: no point waiting for the rest)
ALL_CELLS_RAN = """() => {
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')];
  const outputs = [...document.querySelectorAll('.jp-Notebook .jp-OutputArea-output')];
  const failed = outputs.some(o => o.textContent.includes('Traceback'))
    && !prompts.some(p => p.textContent.includes('*'));
  return failed
    || (prompts.length > 0 && prompts.every(p => /^\\[\\d+\\]:$/.test(p.textContent.trim())));
}"""

# a kernel is connected and idle: the status bar names it ("Python 3 (...) | Idle"; before
# that it says "No Kernel | Initializing", when the toolbar's indicator already says idle)
KERNEL_IDLE = """() => {
  const items = [...document.querySelectorAll('.jp-StatusBar-TextItem')].map(e => e.textContent.trim());
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')];
  return items.some(t => /\\| Idle$/.test(t) && !t.startsWith('No Kernel'))
    && !prompts.some(p => p.textContent.includes('*'));
}"""

FIRST_PLOT_CHANGED = """([selector, before]) => {
  const img = document.querySelector(selector);
  return img !== null && img.complete && img.naturalWidth > 0 && img.src !== before;
}"""


def _errors_on_page(page: Page) -> list[str]:
    texts = page.locator(
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'], .jp-RenderedText"
    ).all_inner_texts()
    bad = [t for t in texts if "Traceback" in t]
    if page.get_by_text("Error displaying widget").count():
        bad.append("Error displaying widget")
    return bad


def _status(panel: Locator) -> str:
    texts = panel.locator(".widget-html").all_inner_texts()
    found = [t for t in texts if "up to date" in t or "out of date" in t or "running" in t]
    return found[-1] if found else ""


def _shot(page: Page, target: Locator, out: Path, name: str) -> None:
    """The JupyterLab window, and the panel alone (an element shot, whatever its height)."""
    target.scroll_into_view_if_needed()
    page.screenshot(path=str(out / f"{name}.png"))
    target.screenshot(path=str(out / f"{name}-panel.png"))


@pytest.fixture
def chromium() -> Path:
    """Debian's chromium and the playwright package, checked before any server starts."""
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"{CHROMIUM} is missing (`make browser` installs Debian's chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("the Python package playwright is not installed (labkit[test] has it)")
    return CHROMIUM


# the fixtures are set up in this order: chromium is checked before the server starts
@pytest.mark.timeout(420)
def test_balancing_notebook_in_chromium(chromium: Path, lab_server: LabServer) -> None:
    from playwright.sync_api import expect, sync_playwright

    out = _artifacts_dir()
    for old in [*out.glob("*.png"), out / "steps.log"]:
        old.unlink(missing_ok=True)
    console: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True, timeout=UI_MS
        )
        try:
            # tall, so the whole panel (controls, comparison table, two plots) fits in one shot
            page = browser.new_page(viewport={"width": 1400, "height": 1700})
            page.set_default_timeout(UI_MS)
            expect.set_options(timeout=UI_MS)  # its own default is 5 s
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            try:
                _drive(page, expect, lab_server, out)
            except BaseException:
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(out / "failure.png"))
                raise
        finally:
            browser.close()
            (out / "console.log").write_text("\n".join(console) + "\n")


class Steps:
    """When each step finished (seconds since the start), for the log, never for asserting."""

    def __init__(self, path: Path) -> None:
        self.path, self.start = path, time.monotonic()
        self.lines: list[str] = []

    def done(self, what: str) -> None:
        self.lines.append(f"{time.monotonic() - self.start:7.1f} s  {what}")
        print(self.lines[-1])
        self.path.write_text("\n".join(self.lines) + "\n")


def _drive(page: Page, expect: Any, server: LabServer, out: Path) -> None:
    steps = Steps(out / "steps.log")
    page.goto(f"{server.url}/lab/tree/{NOTEBOOK.name}?reset&token={server.token}")
    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")
    expect(notebook).to_be_visible()
    expect(notebook.locator(".jp-CodeCell").first).to_be_visible()
    # wait until the kernel is connected (the toolbar's kernel name, then an idle indicator)
    page.wait_for_function(KERNEL_IDLE, timeout=UI_MS)
    expect(page.locator(".jp-Dialog")).to_have_count(0)
    steps.done("notebook open, kernel idle")

    # Run → Run All Cells, as a person would
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    page.wait_for_function(ALL_CELLS_RAN, timeout=RUN_ALL_MS)
    page.wait_for_function(KERNEL_IDLE, timeout=RUN_ALL_MS)
    assert not _errors_on_page(page), _errors_on_page(page)
    kernels = server.kernel_commands()
    assert kernels, "no kernel process under the server"
    assert all(cmd[0] == sys.executable for cmd in kernels), kernels
    steps.done("all cells ran")

    # the panel rendered: the outer VBox that holds the strategy dropdown
    panel = notebook.locator(".widget-vbox").filter(has=page.locator(".widget-dropdown")).first
    expect(panel).to_be_visible()
    for label in PANEL_LABELS:
        expect(
            panel.locator(".widget-label", has_text=re.compile(f"^{re.escape(label)}$"))
        ).to_be_visible()
    assert panel.locator(".widget-slider").count() >= 6
    # by text, not by role: the icon's glyph is part of the button's accessible name
    run_button = panel.locator("button", has_text=re.compile(r"^\s*Run\s*$"))
    expect(run_button).to_be_visible()
    expect(panel.locator("button", has_text=re.compile(r"^\s*Pin as A\s*$"))).to_be_visible()
    expect(panel.locator(".widget-html", has_text=FRESH_RE)).to_be_visible()
    runs = int(FRESH_RE.search(_status(panel)).group(1))  # type: ignore[union-attr]
    assert runs >= 1, _status(panel)
    # plots: PNGs in the panel's output widget
    plots = panel.locator(".widget-output img")
    expect(plots.first).to_be_visible()
    assert plots.count() >= 2, "the panel shows latency percentiles and per-worker load"
    before = plots.first.get_attribute("src") or ""
    assert before.startswith("data:image/png"), before[:60]
    _shot(page, panel, out, "01-all-cells-ran")
    steps.done("panel checked")

    # move a weight slider one step with the keyboard on its handle: the notebook ends on the
    # adaptive strategy weighted by response time alone, so "connections" is enabled and at 0
    weight = panel.locator(".widget-slider").filter(
        has=page.locator(".widget-label", has_text=re.compile(r"^connections$"))
    )
    readout = weight.locator(".widget-readout")
    old = float(readout.inner_text().strip())
    weight.locator(".noUi-handle").focus()
    page.keyboard.press("ArrowRight")
    expect(readout).to_have_text(f"{old + 0.05:.2f}")
    # the weights are shown as the balancer will use them: normalised to sum 1
    expect(panel.locator(".widget-html", has_text="weights used (sum 1)")).to_contain_text(
        "connections 0.05"
    )
    # stale results are marked until the next run
    expect(panel.locator(".widget-html", has_text="out of date")).to_be_visible()
    assert plots.first.get_attribute("src") == before, "no run yet: the plots show the last one"
    steps.done("slider moved, marked out of date")
    _shot(page, panel, out, "02-slider-moved-out-of-date")

    run_button.click()
    expect(panel.locator(".widget-html", has_text=f"up to date (run {runs + 1})")).to_be_visible(
        timeout=RERUN_MS
    )
    # the status is set before the plots are redrawn (one image after the other): wait for the
    # kernel to finish the click, then for the images
    page.wait_for_function(KERNEL_IDLE, timeout=RERUN_MS)
    first_plot = ".jp-Notebook .widget-output img"
    page.wait_for_function(FIRST_PLOT_CHANGED, arg=[first_plot, before], timeout=RERUN_MS)
    expect(plots.nth(1)).to_be_visible()
    after = plots.first.get_attribute("src") or ""
    assert after.startswith("data:image/png") and after != before
    assert not _errors_on_page(page), _errors_on_page(page)
    _shot(page, panel, out, "03-rerun-plot-changed")
    steps.done("rerun from the Run button, plot changed")
