"""The demo's pages in headless Chromium, against the demo app served by uvicorn on 127.0.0.1.

Playwright's async API, on asyncio: its sync API runs on greenlets, which coverage does not follow
unless told to.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING

import pytest
from starlette.applications import Starlette
from websockets.asyncio.client import connect

from tests.browser.chromium import CHROMIUM_ARGS, chromium_executable, playwright_api
from tests.servers import UvicornThread
from wsendpoints.demo import create_app

if TYPE_CHECKING:
    from playwright.async_api import (
        Browser,
        BrowserContext,
        ConsoleMessage,
        Dialog,
        Expect,
        Locator,
        Page,
        WebSocketRoute,
    )

pytestmark = [pytest.mark.browser, pytest.mark.anyio]

TIMEOUT_MS = 10_000
"""The longest any one wait in a page may take."""

XSS = "<img src=x onerror=alert(1)>"


@dataclass(frozen=True, slots=True)
class Demo:
    app: Starlette
    url: str


@dataclass
class Tab:
    """A page in a browser context of its own, as if opened by another user, and what it reported."""

    page: Page
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        await dialog.dismiss()

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def on_page_error(self, error: Exception) -> None:
        self.errors.append(str(error))

    @property
    def status(self) -> Locator:
        return self.page.locator("#status")

    @property
    def log(self) -> Locator:
        return self.page.locator("#log li")

    @property
    def presence(self) -> Locator:
        return self.page.locator("#presence li")

    async def send(self, text: str) -> None:
        await self.page.fill("#message", text)
        await self.page.click("#send button")


@pytest.fixture(scope="module")
def api() -> ModuleType:
    return playwright_api()


@pytest.fixture(scope="module")
async def browser(api: ModuleType) -> AsyncIterator[Browser]:
    executable = chromium_executable()
    async with api.async_playwright() as playwright:
        browser: Browser = await playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True, timeout=30_000
        )
        yield browser
        await browser.close()


@pytest.fixture(scope="module")
def expect(api: ModuleType) -> Expect:
    expect: Expect = api.expect
    expect.set_options(timeout=TIMEOUT_MS)
    return expect


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    app = create_app()
    server = UvicornThread(app)
    url = server.start().replace("ws://", "http://", 1)
    yield Demo(app, url)
    server.stop()


OpenPage = Callable[[str], Awaitable[Tab]]


async def new_tab(browser: Browser) -> tuple[BrowserContext, Tab]:
    """Open a page in a new browser context, watched for dialogs and errors."""
    context = await browser.new_context()
    tab = Tab(await context.new_page())
    tab.page.set_default_timeout(TIMEOUT_MS)
    tab.page.on("dialog", tab.on_dialog)
    tab.page.on("console", tab.on_console)
    tab.page.on("pageerror", tab.on_page_error)
    return context, tab


@pytest.fixture
async def open_page(browser: Browser, demo: Demo) -> AsyncIterator[OpenPage]:
    """Open demo pages, each in a new browser context; check at the end that none reported an error."""
    contexts: list[BrowserContext] = []
    tabs: list[Tab] = []

    async def open_(path: str) -> Tab:
        context, tab = await new_tab(browser)
        contexts.append(context)
        tabs.append(tab)
        await tab.page.goto(demo.url + path)
        return tab

    yield open_
    for context in contexts:
        await context.close()
    assert [(tab.dialogs, tab.errors) for tab in tabs] == [([], [])] * len(tabs)


def new_room() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


async def test_home_page_links_the_echo_and_chat_pages(open_page: OpenPage, expect: Expect) -> None:
    tab = await open_page("/")
    await expect(tab.page).to_have_title("wsendpoints demo")
    await tab.page.click("text=Echo")
    await expect(tab.page).to_have_url(re.compile(r"/echo\.html$"))
    await expect(tab.status).to_have_attribute("data-state", "open")
    await tab.page.go_back()
    await tab.page.click("text=Room chat")
    await expect(tab.page).to_have_url(re.compile(r"/chat\.html$"))
    await expect(tab.page.locator("#pick")).to_be_visible()
    await expect(tab.page.locator("#chat")).to_be_hidden()


async def test_echo_page_gets_the_echo(open_page: OpenPage, expect: Expect) -> None:
    tab = await open_page("/echo.html")
    await expect(tab.status).to_have_attribute("data-state", "open")
    await tab.send("hello, echo")
    await expect(tab.page.locator("#log li.echo")).to_have_text(["hello, echo"])
    await expect(tab.page.locator("#message")).to_have_value("")


async def test_echo_page_shows_the_close_code_and_reason_then_reconnects(open_page: OpenPage, expect: Expect) -> None:
    tab = await open_page("/echo.html")
    await expect(tab.status).to_have_attribute("data-state", "open")
    await tab.send("x" * (1024 * 1024 + 1))
    await expect(tab.page.locator("#log li.error")).to_have_text(["connection closed: 1009 message too big"])
    await expect(tab.status).to_have_attribute("data-state", "open")
    await tab.send("back again")
    await expect(tab.page.locator("#log li.echo")).to_have_text(["back again"])


async def test_chat_page_users_talk_both_ways_and_see_who_is_present(
    open_page: OpenPage, demo: Demo, expect: Expect
) -> None:
    room = new_room()
    ann = await open_page(f"/chat.html?room={room}&user=ann")
    await expect(ann.page.locator("#title")).to_have_text(f"ann in {room}")
    await expect(ann.status).to_have_attribute("data-state", "open")
    await expect(ann.presence).to_have_text(["ann"])

    bob = await open_page("/chat.html")
    await bob.page.fill("#room", room)
    await bob.page.fill("#user", "bob")
    await bob.page.click("#pick button")
    await expect(bob.page).to_have_url(re.compile(rf"/chat\.html\?room={room}&user=bob$"))
    await expect(bob.presence).to_have_text(["ann", "bob"])
    await expect(ann.log.last).to_have_text("bob joined the chat")
    await expect(ann.presence).to_have_text(["ann", "bob"])

    await ann.send("hi bob")
    await expect(bob.log.last).to_have_text("ann: hi bob")
    await expect(ann.log.last).to_have_text("ann: hi bob")
    await bob.send("hi ann")
    await expect(ann.log.last).to_have_text("bob: hi ann")

    await demo.app.state.room.broadcast(room, "hello from the server")
    for tab in (ann, bob):
        await expect(tab.log.last).to_have_text("server: hello from the server")

    await bob.page.close()
    await expect(ann.log.last).to_have_text("bob left the chat")
    await expect(ann.presence).to_have_text(["ann"])


async def test_chat_page_shows_markup_as_text(open_page: OpenPage, expect: Expect) -> None:
    room = new_room()
    ann = await open_page(f"/chat.html?room={room}&user=ann")
    await expect(ann.presence).to_have_text(["ann"])
    bob = await open_page(f"/chat.html?room={room}&user=bob")
    await expect(ann.presence).to_have_text(["ann", "bob"])
    await expect(bob.presence).to_have_text(["ann", "bob"])
    await bob.send(XSS)
    await expect(ann.log.last).to_have_text(f"bob: {XSS}")
    await expect(bob.log.last).to_have_text(f"bob: {XSS}")
    for tab in (ann, bob):
        assert await tab.page.locator("#log img").count() == 0
        assert tab.dialogs == []


async def test_pages_report_dialogs_and_errors_to_the_tests(browser: Browser, demo: Demo) -> None:
    """The checks above would see an alert() or a script error: a probe of each is caught."""
    context, tab = await new_tab(browser)
    await tab.page.goto(demo.url + "/")
    await tab.page.evaluate("alert('probe')")
    await tab.page.evaluate("console.log('fine'); console.error('probe error')")
    async with tab.page.expect_event("pageerror", timeout=TIMEOUT_MS):
        await tab.page.evaluate("setTimeout(() => { throw new Error('probe exception') })")
    await context.close()
    assert tab.dialogs == ["probe"]
    assert tab.errors[0] == "probe error"
    assert "probe exception" in tab.errors[1]


async def test_chat_page_keeps_a_name_present_while_another_connection_has_it(
    open_page: OpenPage, expect: Expect
) -> None:
    room = new_room()
    bob = await open_page(f"/chat.html?room={room}&user=bob")
    first_ann = await open_page(f"/chat.html?room={room}&user=ann")
    await expect(bob.presence).to_have_text(["ann", "bob"])
    second_ann = await open_page(f"/chat.html?room={room}&user=ann")
    await expect(second_ann.presence).to_have_text(["ann", "bob"])
    await second_ann.send("from the second tab")
    await expect(bob.log).to_have_text(["ann joined the chat", "ann: from the second tab"])  # one join notice
    await first_ann.page.close()
    await second_ann.send("still here")
    await expect(bob.log.last).to_have_text("ann: still here")
    await expect(bob.presence).to_have_text(["ann", "bob"])
    await second_ann.page.close()
    await expect(bob.log).to_have_text(
        ["ann joined the chat", "ann: from the second tab", "ann: still here", "ann left the chat"]
    )
    await expect(bob.presence).to_have_text(["bob"])


async def test_chat_page_resumes_after_its_connection_is_cut(open_page: OpenPage, expect: Expect) -> None:
    """bob's connection is cut; ann sends while bob is away; bob reconnects and shows every message once."""
    room = new_room()
    ann = await open_page(f"/chat.html?room={room}&user=ann")
    await expect(ann.presence).to_have_text(["ann"])
    connections: list[tuple[str, WebSocketRoute, WebSocketRoute]] = []
    may_reconnect = asyncio.Event()

    async def through(route: WebSocketRoute) -> None:
        if connections:  # a reconnection: held until ann has sent what bob will have missed
            await may_reconnect.wait()
        connections.append((route.url, route, route.connect_to_server()))

    bob = await open_page("/")
    await bob.page.route_web_socket(re.compile(r"/rooms/"), through)
    await bob.page.goto(f"{bob.page.url}chat.html?room={room}&user=bob")
    await expect(ann.presence).to_have_text(["ann", "bob"])
    await ann.send("one")
    await expect(bob.log.last).to_have_text("ann: one")

    url, page_side, server_side = connections[0]
    assert "since=" not in url
    await server_side.close(code=1000, reason="cut")
    await page_side.close(code=4000, reason="cut")
    await expect(bob.log.last).to_have_text("connection closed: 4000 cut")
    await expect(ann.log.last).to_have_text("bob left the chat")
    await ann.send("two")
    await ann.send("three")
    may_reconnect.set()
    await expect(ann.log.last).to_have_text("bob joined the chat")
    await ann.send("four")
    await expect(bob.log).to_have_text(
        [
            "ann: one",
            "connection closed: 4000 cut",
            "reconnected: 2 messages sent meanwhile",
            "ann: two",
            "ann: three",
            "ann: four",
        ]
    )
    assert "since=" in connections[1][0]


async def test_chat_page_says_when_messages_could_not_be_recovered(open_page: OpenPage, expect: Expect) -> None:
    """It then shows the room's latest messages from the server's history route, none twice, not its own."""
    room = new_room()
    ann = await open_page(f"/chat.html?room={room}&user=ann")
    await expect(ann.presence).to_have_text(["ann"])
    await ann.send("before")
    connections: list[WebSocketRoute] = []

    def answer(route: WebSocketRoute) -> None:
        """A server of our own, which could not recover the first time it is asked to."""
        connections.append(route)
        route.send(json.dumps({"type": "presence", "room": room, "users": ["bob"]}))
        if len(connections) == 1:
            route.send(json.dumps({"type": "message", "room": room, "user": None, "text": "hi", "id": "a-1"}))
        else:
            route.send(json.dumps({"type": "resume", "room": room, "recovered": False, "missed": 0}))

    bob = await open_page("/")
    await bob.page.route_web_socket(re.compile(r"/rooms/"), answer)
    await bob.page.goto(f"{bob.page.url}chat.html?room={room}&user=bob")
    await expect(bob.log).to_have_text(["server: hi"])
    await connections[0].close(code=4000, reason="cut")
    await expect(bob.log).to_have_text(
        [
            "server: hi",
            "connection closed: 4000 cut",
            "reconnected, but messages sent meanwhile could not be recovered",
            "ann joined the chat",
            "ann: before",
        ]
    )
    assert connections[1].url.endswith("?since=a-1")


async def test_chat_page_reads_the_members_once_for_a_burst_of_leaves(
    open_page: OpenPage, demo: Demo, expect: Expect
) -> None:
    room = new_room()
    ann = await open_page(f"/chat.html?room={room}&user=ann")
    await expect(ann.presence).to_have_text(["ann"])
    reads: list[str] = []
    ann.page.on("request", lambda request: reads.append(request.url) if "/members" in request.url else None)
    base = demo.url.replace("http://", "ws://", 1)
    ghosts = [await connect(f"{base}/rooms/{room}/ghost{n}", max_queue=None) for n in range(10)]
    await expect(ann.presence).to_have_count(11)
    async with ann.page.expect_response(lambda response: "/members" in response.url):
        for ghost in ghosts:
            await ghost.close()
        await expect(ann.log.filter(has_text="left the chat")).to_have_count(10)
        await expect(ann.presence).to_have_text(["ann"])
    await ann.page.wait_for_timeout(1500)  # longer than the page's delay: a second read would have come
    assert len(reads) == 1
