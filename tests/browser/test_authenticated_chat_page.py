"""`examples/authenticated_chat.py`'s page in headless Chromium: log in, chat, and see why you were kicked."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from examples import authenticated_chat
from tests.browser.test_demo_pages import Tab, api, browser, expect, new_tab
from tests.servers import UvicornThread

if TYPE_CHECKING:
    from playwright.async_api import Browser, Expect

pytestmark = [pytest.mark.browser, pytest.mark.anyio]

__all__ = ["api", "browser", "expect"]  # the fixtures this module takes from the demo's


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    server = UvicornThread(authenticated_chat.app)
    yield server.start().replace("ws://", "http://", 1)
    server.stop()


async def logged_in(browser: Browser, url: str, user: str, room: str) -> Tab:
    """A tab logged in as `user`, in `room`."""
    _, tab = await new_tab(browser)
    await tab.page.goto(url)
    await tab.page.fill("#login input", user)
    await tab.page.click("#login button")
    await tab.page.fill("#room", room)
    await tab.page.click("#join button")
    return tab


async def test_authenticated_chat_page_shows_why_a_user_was_kicked(browser: Browser, url: str, expect: Expect) -> None:
    room = f"room-{uuid.uuid4().hex[:8]}"
    alice = await logged_in(browser, url, "alice", room)
    await expect(alice.page.locator("#who")).to_have_text("Logged in as alice")
    await expect(alice.log.first).to_have_text("present: alice")
    bob = await logged_in(browser, url, "bob", room)
    await expect(bob.log.first).to_have_text("present: alice, bob")
    await expect(alice.log.nth(1)).to_have_text("bob joined")
    await bob.page.fill("#text", "<b>hi</b>")
    await bob.page.click("#say button")
    await expect(alice.log.nth(2)).to_have_text("bob: <b>hi</b>")  # as text, not markup
    await authenticated_chat.Chat.kick(room, "alice", reason="removed by a moderator")
    await expect(alice.log.nth(3)).to_have_text("closed: 1008 removed by a moderator")
    await expect(bob.log.nth(1)).to_have_text("alice left")
    for tab in (alice, bob):
        await tab.page.context.close()
        assert (tab.dialogs, tab.errors) == ([], [])
