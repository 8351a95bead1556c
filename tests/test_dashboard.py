"""An exported tuning in the real optuna-dashboard, looked at with a real headless browser.

The dashboard serves the journal file that ``diartune export`` wrote; Debian's chromium
(installed by scripts/setup.sh), driven by Playwright, loads a stage's study pages and
waits until the history, the hyperparameter importances and the parallel coordinates
have drawn what the records hold. Screenshots of both pages are kept beside the test's
temporary files. Every wait is on a condition, with a deadline for a slow machine.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from playwright.sync_api import Page, sync_playwright
from recorded_tuning import local_tuning

from diartune.results.artifacts import read_tuning
from diartune.results.export import export_journal, study_name

#: Seconds to wait for the server to answer and for each page to draw.
DEADLINE = 240
#: What scripts/setup.sh installs, started with the flags a closed network needs.
CHROMIUM_FLAGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STAGE = "clustering"


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("Debian's chromium is missing: run scripts/setup.sh")
    return path


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tuning, exported."""
    folder = tmp_path_factory.mktemp("tune") / "ami-tune"
    local_tuning(folder)
    path = folder.parent / "ami-tune.optuna.log"
    export_journal(read_tuning(str(folder)), path)
    return path


@pytest.fixture(scope="module")
def dashboard(journal: Path) -> Iterator[str]:
    """optuna-dashboard serving the journal: its URL, once it answers."""
    command = Path(sys.executable).with_name("optuna-dashboard")
    if not command.exists():
        pytest.fail(f"{command}: optuna-dashboard is missing: run scripts/setup.sh")
    port = free_port()
    server = subprocess.Popen(
        [str(command), str(journal), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + DEADLINE
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/studies", timeout=10) as response:
                    if response.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    server.kill()
                    output = server.communicate()[0]
                    pytest.fail(f"optuna-dashboard did not answer on {url}:\n{output[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture()
def page() -> Iterator[Page]:
    """A page of a fresh headless chromium (Playwright gives it an empty profile)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(DEADLINE * 1000)
            yield page
        finally:
            browser.close()


def study_url(dashboard: str, journal: Path, stage: str) -> str:
    storage = JournalStorage(JournalFileBackend(str(journal)))
    study_id = storage.get_study_id_from_name(study_name("ami-tune", stage))
    return f"{dashboard}/dashboard/studies/{study_id}"


def texts(page: Page, selector: str) -> list[str]:
    return [text.strip() for text in page.locator(selector).all_text_contents()]


def test_the_study_page_draws_history_importances_and_the_tunings_summary(
    dashboard: str, journal: Path, page: Page, tmp_path: Path
) -> None:
    tuning = read_tuning(str(journal.parent / "ami-tune"))
    stage = tuning.spec.stage(STAGE)
    records = [r for r in tuning.records if r.stage == STAGE and not r.is_evaluation]
    completed = sum(r.state == "Succeeded" for r in records)
    assert 0 < completed < len(records)  # a failed trial is there, and drawn as no point

    page.goto(study_url(dashboard, journal, STAGE))
    points = "#plot-history .scatterlayer .trace .points path"
    page.wait_for_function(
        "([selector, count]) => document.querySelectorAll(selector).length === count",
        arg=[points, completed],
    )
    importances = "#graph-hyperparameter-importances .ytick text"
    page.wait_for_function(
        "([selector, count]) => document.querySelectorAll(selector).length === count",
        arg=[importances, len(stage.search_space)],
    )
    assert sorted(texts(page, importances)) == sorted(stage.search_space)
    page.get_by_text("Study User Attributes").wait_for()
    page.screenshot(path=tmp_path / "study.png", full_page=True)
    assert (tmp_path / "study.png").read_bytes().startswith(b"\x89PNG")
    print(f"screenshot: {tmp_path / 'study.png'}")


def test_the_selection_page_draws_parallel_coordinates_of_every_parameter(
    dashboard: str, journal: Path, page: Page, tmp_path: Path
) -> None:
    tuning = read_tuning(str(journal.parent / "ami-tune"))
    names = sorted(tuning.spec.stage(STAGE).search_space)
    page.goto(study_url(dashboard, journal, STAGE) + "/smartSelection")
    titles = "#plot-parallel-coordinate .axis-title"
    page.wait_for_function(
        "([selector, count]) => document.querySelectorAll(selector).length === count",
        arg=[titles, len(names) + 1],
    )
    assert texts(page, titles) == ["Objective 0", *names]
    page.screenshot(path=tmp_path / "selection.png", full_page=True)
    print(f"screenshot: {tmp_path / 'selection.png'}")
