"""The inspectors really render and respond in JupyterLab, driven in headless Chromium by Playwright.

A JupyterLab server (no token, 127.0.0.1, a free port, temporary runtime/settings/workspace folders)
serves *copies* of notebooks 02 and 04, so the committed notebooks never get outputs saved into
them. Each notebook is opened, "Run All Cells" is clicked in the Run menu (on a fresh page, up to
three times, if JupyterLab stalls), and once its inspector has rendered the test checks the image, the coloured claims or both responses of a pair, that
"next" shows a different item and that changing the filter changes what is shown; in notebook 04 it also
checks that each plot cell's figure is an ``<img>`` on the page. Screenshots go
to ``test-artifacts/`` (gitignored). Skips, saying why, when Chromium or Playwright is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RUN_TIMEOUT_MS = 240_000  # a notebook's "Run all" in the browser (about 1-2 minutes on 2 CPU cores)
IDLE = ".jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator[data-status='idle']"
KERNEL = ".jp-NotebookPanel-toolbar [data-jp-item-name='kernelName']"
SETTINGS = {  # keep every cell in the DOM, and no news pop-up
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
}


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    """Poll the server's status API until it answers; fail if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/status", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer at {url} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(base url, served folder): JupyterLab serving copies of the notebooks; killed afterwards."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"chromium is not installed ({CHROMIUM} missing): install it with `apt-get install -y chromium`")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")
    tmp = tmp_path_factory.mktemp("lab")
    served, runtime, settings, workspaces = (tmp / d for d in ("served", "runtime", "settings", "workspaces"))
    served.mkdir()
    for nb in ("02_claim_decomposition.ipynb", "04_preference_pairs.ipynb"):
        shutil.copy(ROOT / "notebooks" / nb, served / nb)
    for name, value in SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(value))
    port = _free_port()
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={served}",
           f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={workspaces}", "--LabApp.extension_manager=readonly"]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI often run as root
    log = open(tmp / "jupyterlab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_for_server(url, proc)
        except (RuntimeError, TimeoutError) as e:
            log.flush()
            raise RuntimeError(f"{e}; log tail:\n{(tmp / 'jupyterlab.log').read_text()[-2000:]}") from None
        yield url, served
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(lab):
    """Headless Debian Chromium driven by Playwright (its own browser download does not work here)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _accept_dialogs(page) -> None:
    """Accept any open JupyterLab dialog; a "Select Kernel" one gets the Python 3 kernel."""
    for dialog in page.locator(".jp-Dialog").all():
        print("dialog:", " ".join(dialog.inner_text().split())[:200])
        for select in dialog.locator("select").all():
            select.select_option(label="Python 3 (ipykernel)")
        dialog.locator(".jp-Dialog-button.jp-mod-accept").first.click()
        dialog.wait_for(state="detached", timeout=15_000)


def _open(page, url: str, notebook: str) -> None:
    """Show ``notebook`` in ``page`` and wait until its kernel is connected and idle, no dialog open (raises after 120 s)."""
    page.goto(f"{url}/lab/tree/{notebook}?reset", wait_until="domcontentloaded")  # ?reset: only this notebook open
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    ready = f"!document.querySelector('.jp-Dialog') && !!document.querySelector(\"{IDLE}\") && document.querySelector(\"{KERNEL}\")?.innerText.includes('Python 3')"
    deadline = time.monotonic() + 120
    while not page.evaluate(ready):
        assert time.monotonic() < deadline, f"the kernel of {notebook} did not connect within 120 s"
        _accept_dialogs(page)  # a guard: JupyterLab starts the notebook's python3 kernel itself, but may ask
        page.wait_for_timeout(500)


def _run_once(page, selector: str, count: int) -> str:
    """Click Run > Run All Cells once; wait until ``count`` elements match ``selector`` ("done"), or say what went wrong."""
    done = f"document.querySelectorAll('{selector}').length >= {count}"
    busy = "[...document.querySelectorAll('.jp-InputPrompt')].some(e => e.innerText.includes('*'))"
    lost = "[...document.querySelectorAll('.jp-OutputArea-output')].some(e => e.innerText.includes('model not found'))"
    page.click(".lm-MenuBar-itemLabel:text-is('Run')", timeout=10_000)
    page.click(".lm-Menu-item[data-command='runmenu:run-all']", timeout=10_000)
    deadline, idle_checks = time.monotonic() + RUN_TIMEOUT_MS / 1000, 0
    while not page.evaluate(done):
        if time.monotonic() > deadline:
            return f"{selector} did not render within {RUN_TIMEOUT_MS / 1000:.0f} s"
        idle_checks = 0 if page.evaluate(busy) else idle_checks + 1
        if idle_checks >= 4:  # nothing running for 8 s and no inspector
            return "widget model not found (ipywidgets missed the kernel)" if page.evaluate(lost) else "Run All Cells ran nothing"
        page.wait_for_timeout(2000)
    page.wait_for_selector(IDLE, timeout=RUN_TIMEOUT_MS)
    return "done"


def _run_all(browser, url: str, notebook: str, selector: str, count: int = 1, tries: int = 3):
    """Open a notebook, Run All Cells, and return the page once ``count`` elements match ``selector``.

    JupyterLab starts the kernel when it opens the notebook. (Starting it first through the REST API raced
    with JupyterLab's session list under load: a "Select Kernel" dialog opened, and once in CI never closed.)
    A try that stalls — a dialog that stays, a click intercepted, widgets saying "model not found"
    (jupyter-widgets/ipywidgets#3823), nothing running — gets a fresh page, which attaches to the same kernel."""
    failures = []
    for attempt in range(tries):
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        try:
            _open(page, url, notebook)
            outcome = _run_once(page, selector, count)
        except Exception as e:  # a dialog that stays, a click intercepted or timed out: record it, try a fresh page
            outcome = f"{type(e).__name__}: {str(e).splitlines()[0]}"
        if outcome == "done":
            break
        failures.append(outcome)
        print(f"attempt {attempt + 1}: {outcome}")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{Path(notebook).stem}_failure_{attempt + 1}.png"), full_page=True)
        page.close()
    else:
        pytest.fail(f"{notebook}: no inspector after {tries} tries: {failures}")
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'] :text('Traceback')")
    assert errors.count() == 0, "a cell raised an error"
    return page


def _state(inspector) -> tuple[str, str]:
    """(position label, shown text) of an inspector in the page."""
    return inspector.locator(".rlaifv-position").inner_text(), inspector.locator(".rlaifv-view").inner_text()


def _check_navigation(inspector) -> dict:
    """Click next (the item changes) and try each non-"all" filter until what is shown changes."""
    before = _state(inspector)
    inspector.locator("button", has_text="next").click()
    inspector.page.wait_for_function("([el, old]) => el.querySelector('.rlaifv-position').innerText !== old",
                                     arg=[inspector.element_handle(), before[0]], timeout=10_000)  # fmt: skip
    after_next = _state(inspector)
    assert after_next != before and after_next[0].startswith("2 /")
    select = inspector.locator(".widget-dropdown select")
    options = [o for o in select.locator("option").all_inner_texts() if o != "all"]
    changed = None
    for option in options:
        select.select_option(label=option)
        inspector.page.wait_for_timeout(700)
        if _state(inspector) != after_next:
            changed = option
            break
    assert changed is not None, f"no filter among {options} changed what is shown"
    return {"before": before[0], "after_next": after_next[0], "filter": changed, "after_filter": _state(inspector)[0]}


def _find_wrongly_rejected(inspectors: list, counts: list[int]) -> str:
    """Step through every pair (filter "all") of each inspector until one shows a correct claim the labeler
    rejected; check that the claim's truth is shown beside its verdict there, and return where it was."""
    for k, (inspector, n) in enumerate(zip(inspectors, counts)):
        inspector.locator(".widget-dropdown select").select_option(label="all")
        inspector.page.wait_for_timeout(700)
        for step in range(n):
            wrong = inspector.locator(".rlaifv-disagree", has_text="wrongly rejected")
            if wrong.count():
                item = wrong.first.locator("xpath=..")  # the claim's list item: claim, verdict, truth, warning
                assert "✗ rejected" in item.inner_text() and "truly true" in item.locator(".rlaifv-claim-truth").inner_text()
                assert inspector.locator(".rlaifv-claim-truth").count() >= inspector.locator(".rlaifv-claim").count()
                item.scroll_into_view_if_needed()
                inspector.screenshot(path=str(ARTIFACTS / "pair_inspector_wrongly_rejected.png"))
                return f"inspector {k + 1}, pair {step + 1}: a wrongly rejected claim with its truth beside the verdict"
            inspector.locator("button", has_text="next").click()
            inspector.page.wait_for_timeout(400)
    pytest.fail(f"no pair in notebook 04's inspectors ({counts} pairs) shows a wrongly rejected claim with its truth")


def test_claim_inspector_in_jupyterlab(lab, browser):
    url, _ = lab
    page = _run_all(browser, url, "02_claim_decomposition.ipynb", ".rlaifv-claim-inspector")
    try:
        inspector = page.locator(".rlaifv-claim-inspector").first
        inspector.scroll_into_view_if_needed()
        assert inspector.locator("img.rlaifv-image").is_visible()
        assert inspector.locator("img.rlaifv-image").bounding_box()["width"] >= 150  # the 48-px image, upscaled
        n_claims = inspector.locator(".rlaifv-response .rlaifv-claim").count()
        assert n_claims > 0 and inspector.locator("table.rlaifv-claims tr").count() > 1
        ARTIFACTS.mkdir(exist_ok=True)
        inspector.screenshot(path=str(ARTIFACTS / "claim_inspector.png"))
        nav = _check_navigation(inspector)
        inspector.screenshot(path=str(ARTIFACTS / "claim_inspector_filtered.png"))
        print(f"ClaimInspector: {n_claims} coloured sentences; {nav}")
    finally:
        page.close()


def _check_figures(page, notebook: str) -> None:
    """Every cell of ``notebook`` that calls a plot helper shows its figure as a loaded ``<img>`` on the page."""
    import nbformat
    from test_notebooks import _PLOT_CALL

    cells = nbformat.read(ROOT / "notebooks" / notebook, as_version=4).cells
    expected = sum(1 for c in cells if c.cell_type == "code" and _PLOT_CALL.search(c.source))
    figures = ".jp-OutputArea .jp-RenderedImage img"  # JupyterLab renders an image/png output as div.jp-RenderedImage > img
    page.wait_for_function(f"document.querySelectorAll('{figures}').length >= {expected}", timeout=RUN_TIMEOUT_MS)
    assert expected >= 1 and page.evaluate(f"[...document.querySelectorAll('{figures}')].every(i => i.complete && i.naturalWidth > 100)")
    page.locator(figures).first.screenshot(path=str(ARTIFACTS / f"{Path(notebook).stem}_figure.png"))


def test_pair_inspector_in_jupyterlab(lab, browser):
    url, _ = lab
    page = _run_all(browser, url, "04_preference_pairs.ipynb", ".rlaifv-pair-inspector", count=2)
    try:
        inspectors = page.locator(".rlaifv-pair-inspector").all()
        # the first inspector with at least two pairs (self-feedback pairs, else the perfect labeler's)
        counts = [int(i.locator(".rlaifv-position").inner_text().split("/")[1].split()[0]) for i in inspectors]
        assert max(counts) >= 2, f"no PairInspector shows two pairs or more: {counts}"
        inspector = inspectors[next(k for k, n in enumerate(counts) if n >= 2)]
        inspector.scroll_into_view_if_needed()
        assert inspector.locator("img.rlaifv-image").is_visible()
        assert inspector.locator(".rlaifv-chosen .rlaifv-response").is_visible()
        assert inspector.locator(".rlaifv-rejected .rlaifv-response").is_visible()
        assert inspector.locator(".rlaifv-chosen").inner_text() != inspector.locator(".rlaifv-rejected").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        inspector.screenshot(path=str(ARTIFACTS / "pair_inspector.png"))
        nav = _check_navigation(inspector)
        inspector.screenshot(path=str(ARTIFACTS / "pair_inspector_filtered.png"))
        page.screenshot(path=str(ARTIFACTS / "notebook_04_page.png"))
        truth = _find_wrongly_rejected(inspectors, counts)
        print(f"PairInspectors with pairs: {counts}; {nav}; {truth}")
        _check_figures(page, "04_preference_pairs.ipynb")
    finally:
        page.close()
