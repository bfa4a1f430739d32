"""The status page at ``/``: what the app serves, and the page in a real headless Chromium."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import os
import re
import socket
import threading
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread
import httpx
import pytest
import uvicorn
from anyio.from_thread import start_blocking_portal
from selenium.webdriver import Chrome
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.wait import WebDriverWait
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

import workit
import workit.http
from workit.status import HandlerStatus

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from contextlib import AbstractAsyncContextManager

    from selenium.webdriver.remote.webelement import WebElement
    from starlette.requests import Request
    from starlette.types import ASGIApp, Receive, Scope, Send

T = TypeVar("T")

HOST = "127.0.0.1"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = "Chromium is not installed: apt-get install -y chromium chromium-driver"
# Root on a closed network: no sandbox, no call home, nothing but the page.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    "--window-size=1280,800",
)
WAIT = 10.0
"""The longest any wait in the browser may take (the page polls every 2 s)."""
TICK_WAIT = 3.0
"""Less than the page's 5 s request timeout: while a poll hangs, only the clock moves the page."""
COOLER = 3600.0
"""Long enough that a handler runs once during a test."""

# Each visible row of the table, as {column: the text a reader sees}.
TABLE = """
return Array.from(document.querySelectorAll("#rows tr")).map((tr) => {
  const row = {};
  for (const cell of tr.children) row[cell.dataset.col] = cell.innerText.trim();
  return row;
});
"""
# Each row's strip of recent outcomes, oldest first, by handler name.
STRIPS = """
const strips = {};
for (const tr of document.querySelectorAll("#rows tr")) {
  strips[tr.dataset.name] = Array.from(tr.querySelectorAll(".strip > span")).map((cell) => ({
    outcome: cell.dataset.outcome, colour: getComputedStyle(cell).backgroundColor,
  }));
}
return strips;
"""


# What markup in server strings would have done, had the page let it in.
INJECTED = """
return [window.injected, document.querySelectorAll("#rows img, #rows script, #rows b").length];
"""


# What the app serves, without a browser.


class _References(HTMLParser):
    """Collects the tags of a page and every URL its attributes name."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def urls(self) -> list[str]:
        names = ("src", "href", "action", "srcset", "poster", "data", "formaction")
        return [attrs[name] or "" for _, attrs in self.tags for name in names if name in attrs]


@asynccontextmanager
async def client(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client calling ``app`` in process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def idle_worker(registry: workit.Registry) -> workit.ParallelWorker:
    """A worker that is never started: the page is the same whatever it does."""
    return workit.ParallelWorker([Job("idle")], registry=registry)


async def get_page(registry: workit.Registry) -> httpx.Response:
    """``GET /`` of ``app(worker)``."""
    with anyio.fail_after(5):
        async with client(workit.http.app(idle_worker(registry))) as http:
            return await http.get("/")


@pytest.mark.anyio
async def test_root_serves_the_status_page_as_html(registry: workit.Registry) -> None:
    """GET / answers 200 with an HTML document in UTF-8."""
    response = await get_page(registry)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.text.lower().startswith("<!doctype html>")
    assert "<table" in response.text


@pytest.mark.anyio
async def test_page_refers_to_no_other_host(registry: workit.Registry) -> None:
    """The page names no http(s) URL: no script, stylesheet, font or image from elsewhere."""
    html = (await get_page(registry)).text
    references = _References()
    references.feed(html)
    assert re.findall(r"https?:|//[\w.-]+\.\w", html) == []
    assert re.findall(r"@import|url\(", html) == []
    for url in references.urls():
        assert url.startswith("data:") or re.match(r"^[\w./-]*$", url), url
    assert [attrs for tag, attrs in references.tags if tag == "script" and attrs] == []
    links = [attrs for tag, attrs in references.tags if tag == "link"]
    assert links == [{"rel": "icon", "href": "data:,"}]


@pytest.mark.anyio
async def test_page_policy_runs_only_the_page_own_code(registry: workit.Registry) -> None:
    """The page's Content-Security-Policy allows only its inline blocks and its own origin."""
    response = await get_page(registry)
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["content-security-policy"].split(";")
    )
    [script] = re.findall(r"<script>(.*?)</script>", response.text, flags=re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == f"'sha256-{digest}'"
    assert policy["style-src"].startswith("'sha256-")
    assert policy["connect-src"] == "'self'"
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.anyio
async def test_page_answers_under_a_mount(registry: workit.Registry) -> None:
    """Mounted at /worker, the page answers at /worker/ and /worker redirects there."""
    api = Starlette(routes=[Mount("/worker", app=workit.http.app(idle_worker(registry)))])
    with anyio.fail_after(5):
        async with client(api) as http:
            slash = await http.get("/worker/")
            bare = await http.get("/worker", follow_redirects=True)
    assert slash.status_code == 200
    assert slash.headers["content-type"].startswith("text/html")
    assert bare.status_code == 200
    assert bare.text == slash.text


# The page in a browser: servers, handlers and the browser itself.


class Job:
    """An async handler cooling for ``cooler`` seconds; ``error`` makes it raise ValueError."""

    def __init__(self, name: str, *, cooler: float = COOLER, error: str | None = None) -> None:
        self.name = name
        self.cooler = cooler
        self.error = error

    async def ensure(self) -> None:
        if self.error is not None:
            raise ValueError(self.error)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def worker_served(worker: workit.Worker, port: int) -> AsyncIterator[None]:
    """``worker`` running, and ``workit.http.serve(worker)`` on ``port``, for the block."""
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(worker.daemon)
        with anyio.fail_after(WAIT):
            await worker.wait_ready()
            await anyio.wait_all_tasks_blocked()  # the first executions are over
        try:
            async with workit.http.serve(worker, HOST, port):
                yield
        finally:
            worker.stop()


class _Server(uvicorn.Server):
    """A uvicorn server that says when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = anyio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


@asynccontextmanager
async def app_served(app: ASGIApp, port: int) -> AsyncIterator[None]:
    """Any ASGI app, with its lifespan, behind a real uvicorn socket on ``port``."""
    config = uvicorn.Config(
        app, host=HOST, port=port, log_config=None, lifespan="on", access_log=False
    )
    server = _Server(config)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve)
        with anyio.fail_after(WAIT):
            await server.listening.wait()
        try:
            yield
        finally:
            server.should_exit = True


@contextlib.contextmanager
def site(
    served: Callable[[int], AbstractAsyncContextManager[None]], port: int | None = None
) -> Iterator[str]:
    """Run ``served(port)`` in an event loop of its own, for the block; yields the base URL."""
    port = free_port() if port is None else port
    with (
        start_blocking_portal("asyncio") as portal,
        portal.wrap_async_context_manager(served(port)),
    ):
        yield f"http://{HOST}:{port}/"


class Synthetic:
    """A ``/status`` of the test's making, next to the real page.

    After ``hold()``, requests wait until ``release()`` before they are answered.
    """

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.holding = False
        self.held = 0
        self._released = threading.Event()

    def hold(self) -> None:
        """Keep the next requests waiting."""
        self.holding = True

    def release(self) -> None:
        """Answer the requests kept waiting, and the next ones at once."""
        self._released.set()

    def app(self, worker: workit.Worker) -> Starlette:
        """The page of ``app(worker)``, with this object's ``/status``."""

        async def status(request: Request) -> Response:
            if self.holding:
                self.held += 1
                await anyio.to_thread.run_sync(self._released.wait)
            return JSONResponse(self.document)

        return Starlette(routes=[Route("/status", status), Mount("", app=workit.http.app(worker))])


def entry(name: str, extra: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    """A /status handler entry, made as the server makes one: an idle handler that succeeded
    a second ago and runs again in an hour, but for ``changes``; ``extra`` adds fields."""
    now = datetime.now(UTC)
    status = HandlerStatus(
        name=name,
        engine="parallel",
        active=True,
        running=False,
        executions=1,
        failures=0,
        consecutive_failures=0,
        last_started=now - timedelta(seconds=1.01),
        last_finished=now - timedelta(seconds=1),
        last_success=now - timedelta(seconds=1),
        last_duration=0.01,
        last_outcome="success",
        last_error=None,
        next_run=now + timedelta(hours=1),
    )
    return {**dataclasses.replace(status, **changes).to_dict(), **(extra or {})}


def document(*entries: dict[str, Any], ready: bool = True, **extra: Any) -> dict[str, Any]:
    """A /status document of ``entries``; ``extra`` adds top-level fields (``fleet``)."""
    return {"ready": ready, "handlers": list(entries), **extra}


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chrome]:
    """One headless Chromium for the module, driven through the system's chromedriver."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        if os.environ.get("WORKIT_REQUIRE_BROWSER") == "1":
            pytest.fail(INSTALL)
        pytest.skip(INSTALL)
    profile = tmp_path_factory.mktemp("chromium")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(profile / "driver.log"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "1")  # never let Selenium look for a driver online
        driver = Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(
    browser: Chrome, condition: Callable[[], T | None], what: str, timeout: float = WAIT
) -> T:
    """The first value of ``condition()`` that is neither false nor None, within ``timeout`` s."""
    value = WebDriverWait(browser, timeout, poll_frequency=0.05).until(
        lambda _: condition(), message=f"no {what} within {timeout} s"
    )
    assert value is not None
    return value


def wait_for_row(
    browser: Chrome,
    name: str,
    condition: Callable[[dict[str, str]], bool],
    what: str,
    timeout: float = WAIT,
) -> dict[str, str]:
    """The row of handler ``name`` once ``condition(row)`` holds, within ``timeout`` s."""

    def row() -> dict[str, str] | None:
        found = by_name(browser).get(name)
        return found if found is not None and condition(found) else None

    return wait_for(browser, row, what, timeout)


def table(browser: Chrome) -> list[dict[str, str]]:
    """The visible rows: each as {column: the text a reader sees}."""
    rows: list[dict[str, str]] = browser.execute_script(TABLE)
    return rows


def by_name(browser: Chrome) -> dict[str, dict[str, str]]:
    """The visible rows by handler name."""
    return {row["name"]: row for row in table(browser)}


def names(browser: Chrome) -> list[str]:
    """The handler names of the visible rows, top to bottom."""
    return [row["name"] for row in table(browser)]


def connection(browser: Chrome) -> str:
    """The page's connection line: "live ..." or "disconnected ..."."""
    return browser.find_element(By.ID, "connection").text


def show(browser: Chrome, url: str, rows: int) -> None:
    """Open ``url`` and wait until its table has ``rows`` rows and the page is live."""
    browser.get(url)
    wait_for(browser, lambda: len(table(browser)) == rows, f"{rows} rows")
    wait_for(browser, lambda: connection(browser).startswith("live"), "live connection")


@contextlib.contextmanager
def synthetic(registry: workit.Registry, status: Synthetic) -> Iterator[str]:
    """Serve the page with ``status`` for the block; yields the base URL."""
    app = status.app(idle_worker(registry))
    with site(lambda port: app_served(app, port)) as url:
        try:
            yield url
        finally:
            status.release()


def console(browser: Chrome) -> list[dict[str, Any]]:
    """What the browser logged since the last call: console messages, failed loads, errors."""
    entries: list[dict[str, Any]] = browser.get_log("browser")  # type: ignore[no-untyped-call]  # unannotated
    return entries


def count(text: str) -> int:
    """A count as the page shows it ("1,234")."""
    return int(re.sub(r"\D", "", text))


def header(browser: Chrome, label: str) -> WebElement:
    """The sort button of the column headed ``label``."""
    return browser.find_element(By.XPATH, f"//thead//button[normalize-space()='{label}']")


def sorted_by(browser: Chrome) -> dict[str, str]:
    """{column: aria-sort} for the headers that have an aria-sort."""
    headers = browser.find_elements(By.CSS_SELECTOR, "thead th[aria-sort]")
    return {str(th.get_attribute("data-col")): str(th.get_attribute("aria-sort")) for th in headers}


# The page with a real worker.


def test_table_shows_every_handler(browser: Chrome, registry: workit.Registry) -> None:
    """Every handler of a combined worker has a row, with its engine, in the worker's order."""
    worker = workit.CombinedWorker(
        workit.ParallelWorker([Job("sync_users"), Job("prune_cache")], registry=registry),
        workit.SequenceWorker([[Job("scan")], [Job("report")]], cooler=COOLER, registry=registry),
    )
    with site(lambda port: worker_served(worker, port)) as url:
        show(browser, url, 4)
        rows = table(browser)
        summary = browser.find_element(By.ID, "summary").text
    assert [(row["name"], row["engine"]) for row in rows] == [
        ("sync_users", "parallel"),
        ("prune_cache", "parallel"),
        ("scan", "sequence"),
        ("report", "sequence"),
    ]
    assert all(row["state"] == "idle" for row in rows)
    assert all(count(row["executions"]) == 1 for row in rows)
    assert "4 handlers" in summary


def test_an_execution_shows_without_a_reload(browser: Chrome, registry: workit.Registry) -> None:
    """A handler's executions count goes up on the page while the page stays loaded."""
    worker = workit.ParallelWorker([Job("tick", cooler=0.2)], registry=registry)
    with site(lambda port: worker_served(worker, port)) as url:
        show(browser, url, 1)
        first = count(by_name(browser)["tick"]["executions"])
        browser.execute_script("window.stillTheSamePage = true;")
        later = wait_for_row(
            browser, "tick", lambda row: count(row["executions"]) > first, "new execution"
        )
        same_page = browser.execute_script("return window.stillTheSamePage === true;")
    assert count(later["executions"]) > first
    assert same_page


def test_failing_handler_is_marked_with_its_error(
    browser: Chrome, registry: workit.Registry
) -> None:
    """A handler whose execution raised shows as failing, with the error's type and message."""
    worker = workit.ParallelWorker(
        [Job("steady"), Job("broken", error="disk full")], registry=registry
    )
    with site(lambda port: worker_served(worker, port)) as url:
        show(browser, url, 2)
        broken = wait_for_row(browser, "broken", lambda row: row["state"] == "failing", "failure")
        steady = by_name(browser)["steady"]
        summary = browser.find_element(By.ID, "summary").text
    assert broken["outcome"].startswith("failure")
    assert "ValueError: disk full" in broken["outcome"]
    assert count(broken["failures"]) == 1
    assert steady["state"] == "idle"
    assert "ValueError" not in steady["outcome"]
    assert "1 failing" in summary


def test_server_strings_are_shown_as_text(browser: Chrome, registry: workit.Registry) -> None:
    """Markup in a handler's name or error message is shown as text, never run."""
    name = "<img src=x onerror=\"window.injected='name'\"> 'quoted' & co"
    message = "<script>window.injected='error'</script> <b>bold</b> & \"more\""
    worker = workit.ParallelWorker([Job(name, error=message)], registry=registry)
    with site(lambda port: worker_served(worker, port)) as url:
        show(browser, url, 1)
        row = wait_for_row(browser, name, lambda row: "ValueError" in row["outcome"], "error")
        injected = browser.execute_script(INJECTED)
    assert row["name"] == name
    assert f"ValueError: {message}" in row["outcome"]
    assert injected == [None, 0]


def test_filter_narrows_the_rows(browser: Chrome, registry: workit.Registry) -> None:
    """The labelled filter box keeps the rows whose name, engine or state contains its text."""
    worker = workit.CombinedWorker(
        workit.ParallelWorker(
            [Job("sync_users"), Job("sync_orders"), Job("prune_cache", error="gone")],
            registry=registry,
        ),
        workit.SequenceWorker([[Job("scan")], [Job("report")]], cooler=COOLER, registry=registry),
    )
    with site(lambda port: worker_served(worker, port)) as url:
        show(browser, url, 5)
        label = browser.find_element(By.XPATH, "//label[normalize-space()='Filter']")
        box = browser.find_element(By.ID, str(label.get_attribute("for")))
        seen: dict[str, list[str]] = {}
        for text in ("sync", "SEQUENCE", "fail", "nothing like it", ""):
            box.send_keys(Keys.CONTROL, "a")
            box.send_keys(Keys.BACKSPACE)
            if text:
                box.send_keys(text)
            seen[text] = names(browser)
        message = browser.find_element(By.ID, "message")
        box.send_keys("nothing like it")
        no_match = message.is_displayed() and message.text
    assert seen == {
        "sync": ["sync_users", "sync_orders"],
        "SEQUENCE": ["scan", "report"],
        "fail": ["prune_cache"],
        "nothing like it": [],
        "": ["sync_users", "sync_orders", "prune_cache", "scan", "report"],
    }
    assert no_match
    assert "nothing like it" in no_match


@pytest.mark.parametrize("path", ["/worker", "/worker/"])
def test_page_works_mounted(browser: Chrome, registry: workit.Registry, path: str) -> None:
    """Mounted at /worker in a Starlette app, the page shows the worker at /worker and /worker/."""
    worker = workit.ParallelWorker([Job("mounted")], registry=registry)
    api = Starlette(
        lifespan=workit.http.lifespan(worker),
        routes=[Mount("/worker", app=workit.http.app(worker))],
    )
    with site(lambda port: app_served(api, port)) as url:
        show(browser, url.rstrip("/") + path, 1)
        row = table(browser)[0]
        requested = browser.execute_script(
            "return performance.getEntriesByType('resource').map((entry) => entry.name);"
        )
    assert row["name"] == "mounted"
    assert count(row["executions"]) == 1
    assert f"{url}worker/status" in requested


class AtRoot:
    """An ASGI app answering every request with what ``app`` answers at ``/``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app({**scope, "path": "/", "root_path": ""}, receive, send)


def test_page_works_at_a_path_without_a_slash(browser: Chrome, registry: workit.Registry) -> None:
    """Served at /worker itself (a proxy that does not redirect), the page finds /worker/status."""
    worker = workit.ParallelWorker([Job("proxied")], registry=registry)
    endpoints = workit.http.app(worker)
    api = Starlette(
        lifespan=workit.http.lifespan(worker),
        routes=[Route("/worker", AtRoot(endpoints)), Mount("/worker", app=endpoints)],
    )
    with site(lambda port: app_served(api, port)) as url:
        show(browser, f"{url}worker", 1)
        address = browser.current_url
        row = table(browser)[0]
    assert address == f"{url}worker"
    assert row["name"] == "proxied"


def test_page_needs_nothing_from_elsewhere(browser: Chrome, registry: workit.Registry) -> None:
    """The page requests only its own origin and logs no error: no failed load, no blocked code."""
    worker = workit.ParallelWorker([Job("alone"), Job("broken", error="x")], registry=registry)
    with site(lambda port: worker_served(worker, port)) as url:
        browser.get("about:blank")
        console(browser)  # what earlier pages logged
        show(browser, url, 2)
        wait_for(browser, lambda: by_name(browser)["broken"]["state"] == "failing", "a poll")
        requested: list[str] = browser.execute_script(
            "return performance.getEntriesByType('resource').map((entry) => entry.name);"
        )
        logged = console(browser)
    assert requested
    assert [name for name in requested if not name.startswith(url)] == []
    assert [entry for entry in logged if entry["level"] in ("SEVERE", "WARNING")] == []


def test_failed_poll_shows_disconnected_and_keeps_the_table(
    browser: Chrome, registry: workit.Registry
) -> None:
    """When the server goes away the page says disconnected, keeps its rows, and recovers."""
    port = free_port()
    first = workit.ParallelWorker([Job("steady")], registry=registry)
    with site(lambda port: worker_served(first, port), port) as url:
        show(browser, url, 1)
    wait_for(browser, lambda: connection(browser).startswith("disconnected"), "disconnected")
    kept = names(browser)
    again = workit.ParallelWorker([Job("steady"), Job("new")], registry=registry)
    with site(lambda port: worker_served(again, port), port):
        wait_for(browser, lambda: connection(browser).startswith("live"), "reconnection")
        after = names(browser)
    assert kept == ["steady"]
    assert after == ["steady", "new"]


# The page with a status of the test's making: values a real worker gives only by chance,
# and the fields the status gains with leases (recent, overdue, fleet).


def test_clicking_a_header_sorts_the_rows(browser: Chrome, registry: workit.Registry) -> None:
    """A header click sorts by its column (counts as numbers), a second click reverses it."""
    status = Synthetic(
        document(
            entry("b_two", executions=7),
            entry("a_one", executions=50),
            entry("c_three", executions=5),
        )
    )
    with synthetic(registry, status) as url:
        show(browser, url, 3)
        unsorted = names(browser), sorted_by(browser)
        header(browser, "Executions").click()
        ascending = names(browser), sorted_by(browser)
        header(browser, "Executions").click()
        descending = names(browser), sorted_by(browser)
        header(browser, "Name").click()
        by_name_ = names(browser), sorted_by(browser)
    assert unsorted == (["b_two", "a_one", "c_three"], {})
    assert ascending == (["c_three", "b_two", "a_one"], {"executions": "ascending"})
    assert descending == (["a_one", "b_two", "c_three"], {"executions": "descending"})
    assert by_name_ == (["a_one", "b_two", "c_three"], {"name": "ascending"})


def test_state_is_derived_from_the_status(browser: Chrome, registry: workit.Registry) -> None:
    """Each row's state: overdue, else running, else failing, else inactive, else idle."""
    failed: dict[str, Any] = {"last_outcome": "failure", "consecutive_failures": 2}
    status = Synthetic(
        document(
            entry("late", {"overdue": True}, running=True, **failed),
            entry("busy", {"overdue": False}, running=True, **failed),
            entry("streak", **failed),
            entry("last_failed", last_outcome="failure"),
            entry("failed_then_off", active=False, consecutive_failures=1),
            entry("off", active=False),
            entry("fine", {"overdue": False}),
            entry("never_asked", active=None, last_outcome=None, executions=0),
        )
    )
    with synthetic(registry, status) as url:
        show(browser, url, 8)
        states = {name: row["state"] for name, row in by_name(browser).items()}
    assert states == {
        "late": "overdue",
        "busy": "running",
        "streak": "failing",
        "last_failed": "failing",
        "failed_then_off": "failing",
        "off": "inactive",
        "fine": "idle",
        "never_asked": "idle",
    }


@pytest.mark.parametrize(("ready", "readiness"), [(True, "ready"), (False, "not ready")])
def test_summary_counts_handlers_failing_running_and_readiness(
    browser: Chrome, registry: workit.Registry, ready: bool, readiness: str
) -> None:
    """The summary line counts the handlers, the failing and the running ones, and says ready."""
    status = Synthetic(
        document(
            entry("a", consecutive_failures=1, last_outcome="failure"),
            entry("b", consecutive_failures=3, last_outcome="failure"),
            entry("c", running=True),
            entry("d"),
            entry("e", active=False),
            ready=ready,
        )
    )
    with synthetic(registry, status) as url:
        show(browser, url, 5)
        parts = {
            str(part.get_attribute("data-part")): part.text
            for part in browser.find_elements(By.CSS_SELECTOR, "#summary [data-part]")
        }
    assert parts == {
        "handlers": "5 handlers",
        "failing": "2 failing",
        "running": "1 running",
        "ready": readiness,
    }


def test_next_run_counts_down_between_polls(browser: Chrome, registry: workit.Registry) -> None:
    """The next run is a countdown that ticks every second between polls."""
    due = datetime.now(UTC) + timedelta(seconds=125)
    status = Synthetic(document(entry("later", next_run=due)))
    with synthetic(registry, status) as url:
        show(browser, url, 1)
        status.hold()
        wait_for(browser, lambda: status.held > 0, "poll kept waiting")
        before = table(browser)[0]["next"]
        after = wait_for_row(browser, "later", lambda row: row["next"] != before, "tick", TICK_WAIT)
        live = connection(browser)

    def seconds(text: str) -> int:
        found = re.fullmatch(r"in (\d)m (\d\d)s", text)
        assert found, text
        return int(found[1]) * 60 + int(found[2])

    assert 110 < seconds(after["next"]) < seconds(before) <= 125
    assert live.startswith("live")


def test_next_run_says_due_or_dash(browser: Chrome, registry: workit.Registry) -> None:
    """A next run in the past reads "due", none planned reads a dash, others "in ..."."""
    now = datetime.now(UTC)
    status = Synthetic(
        document(
            entry("past", next_run=now - timedelta(seconds=5)),
            entry("none", next_run=None),
            entry("soon", next_run=now + timedelta(seconds=42)),
            entry("later", next_run=now + timedelta(hours=3, minutes=10)),
        )
    )
    with synthetic(registry, status) as url:
        show(browser, url, 4)
        shown = {name: row["next"] for name, row in by_name(browser).items()}
    assert shown["past"] == "due"
    assert shown["none"] == "\u2014"
    assert re.fullmatch(r"in (3[0-9]|4[0-2])s", shown["soon"]), shown["soon"]
    assert shown["later"] in ("in 3h 10m", "in 3h 09m")


def test_recent_outcomes_are_a_strip(browser: Chrome, registry: workit.Registry) -> None:
    """The recent outcomes are a strip of cells, oldest first, a colour per outcome; none: empty."""
    recent = ["success", "ignored", "failure", "success"]
    status = Synthetic(document(entry("with_recent", {"recent": recent}), entry("without")))
    with synthetic(registry, status) as url:
        show(browser, url, 2)
        strips = browser.execute_script(STRIPS)
        column = browser.find_element(By.CSS_SELECTOR, "thead th[data-col='recent']").is_displayed()
    cells = strips["with_recent"]
    assert [cell["outcome"] for cell in cells] == recent
    colours = {cell["outcome"]: cell["colour"] for cell in cells}
    assert len(set(colours.values())) == 3, colours
    assert strips["without"] == []
    assert column


def test_fleet_block_shows_the_replicas(browser: Chrome, registry: workit.Registry) -> None:
    """A status with a fleet shows its group, backend, connection, identity and members."""
    fleet = {
        "identity": "replica-b",
        "group": "billing",
        "backend": "redis",
        "connected": True,
        "members": ["replica-a", "replica-b", "replica-c"],
    }
    status = Synthetic(document(entry("invoice"), fleet=fleet))
    with synthetic(registry, status) as url:
        show(browser, url, 1)
        block = browser.find_element(By.ID, "fleet")
        text = block.text
        members = [item.text for item in block.find_elements(By.CSS_SELECTOR, "li")]
        this_one = block.find_element(By.CSS_SELECTOR, "li.self").text
        shown = block.is_displayed()
    assert shown
    for value in ("billing", "redis", "connected", "replica-b"):
        assert value in text
    assert members == ["replica-a", "replica-b", "replica-c"]
    assert this_one == "replica-b"


@pytest.mark.parametrize("fleet", [{}, {"fleet": None}], ids=["missing", "null"])
def test_fleet_block_is_hidden_without_a_fleet(
    browser: Chrome, registry: workit.Registry, fleet: dict[str, Any]
) -> None:
    """A status without a fleet, or with a null one, shows no fleet block."""
    status = Synthetic(document(entry("alone"), **fleet))
    with synthetic(registry, status) as url:
        show(browser, url, 1)
        shown = browser.find_element(By.ID, "fleet").is_displayed()
    assert not shown
