"""Pages fit a cleanroom tablet (either way up) and a phone: never a sideways scroll, a header of one row.

At 1024x768, 768x1024 and 390x844 each main page is opened in turn (one browser page per size), and:
- the document is no wider than the viewport (wide tables scroll inside their card instead);
- the header is under 80 px tall (below 1,100 px the links fold into a "Menu");
- the "Menu" button, the search box and its button, every link of the opened menu and the sign-out, and
  every button shown on the page are at least 44 px tall (gloved fingers);
- a full-page screenshot is kept in test-artifacts/layout-<size>-<page>.png.
"""

from __future__ import annotations

import pytest

from tests.browser.pages import ADMIN, main_pages, switch_user

pytestmark = pytest.mark.browser

SIZES = {
    "tablet-landscape": {"width": 1024, "height": 768},
    "tablet-portrait": {"width": 768, "height": 1024},
    "phone": {"width": 390, "height": 844},
}
HEADER_MAX = 80
TAP_MIN = 44

# Visible controls smaller than a gloved fingertip: (selector text, width, height).
SMALL_TARGETS_JS = """([selector, min]) => {
  const out = [];
  for (const el of document.querySelectorAll(selector)) {
    const r = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    if (r.width === 0 || r.height === 0 || style.visibility === 'hidden') continue;
    if (el.closest('.visually-hidden')) continue;
    if (r.height < min || r.width < min) {
      const label = (el.innerText || el.value || el.getAttribute('aria-label') || el.name || el.id || '').trim();
      const size = `${Math.round(r.width)}x${Math.round(r.height)}`;
      out.push(`${el.tagName.toLowerCase()}.${el.className} "${label.slice(0, 40)}" ${size}`);
    }
  }
  return out;
}"""

PAGE_CONTROLS = ("main button, main .btn, main input[type=submit], "
                 "header button, header summary, header input[type=search]")
MENU_CONTROLS = "header .mainnav a, header .session button, header .session a, header .session select"


def overflow(page) -> int:
    return page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")


def header_height(page) -> float:
    return page.locator("header.topbar").evaluate("el => el.getBoundingClientRect().height")


@pytest.mark.parametrize("size", list(SIZES))
def test_main_pages_fit_the_screen(page, live_server, screenshot, size):
    viewport = SIZES[size]
    page.set_viewport_size(viewport)
    problems: list[str] = []
    user = None
    for name, username, path in main_pages(live_server):
        user = switch_user(page, live_server, user, username)
        response = page.goto(path)
        assert response.status == 200, f"{path}: {response.status}"
        page.wait_for_load_state("load")

        sideways = overflow(page)
        if sideways > 0:
            problems.append(f"{name}: scrolls sideways by {sideways}px")
        height = header_height(page)
        if height >= HEADER_MAX:
            problems.append(f"{name}: header {height:.0f}px tall")
        small = page.evaluate(SMALL_TARGETS_JS, [PAGE_CONTROLS, TAP_MIN])
        problems += [f"{name}: small target {target}" for target in small]
        # The search box is in the bar, usable without opening anything (the administrator has none).
        if username != ADMIN and not page.locator("#find-q").is_visible():
            problems.append(f"{name}: the search box is hidden")
        screenshot(f"layout-{size}-{name}")

    # Below 1,100 px the links are in the menu: closed it hides them, opened it shows every one as a big
    # target, over the page, without widening it.
    menu = page.locator("header details.menu")
    nav = page.get_by_role("navigation", name="Main")
    assert not nav.get_by_role("link", name="Dashboard").is_visible()
    menu.locator("summary").click()
    assert menu.evaluate("el => el.open") is True
    assert nav.get_by_role("link", name="Dashboard").is_visible()
    assert nav.get_by_role("link", name="Users").is_visible()
    assert page.get_by_role("button", name="Sign out").is_visible()
    problems += [f"menu: small target {target}" for target in page.evaluate(SMALL_TARGETS_JS, [MENU_CONTROLS, TAP_MIN])]
    if (sideways := overflow(page)) > 0:
        problems.append(f"menu: scrolls sideways by {sideways}px")
    if (height := header_height(page)) >= HEADER_MAX:
        problems.append(f"menu: the header grew to {height:.0f}px (the panel must open over the page)")
    screenshot(f"layout-{size}-menu-open")
    # A name typed as one 2,000-character word wraps inside the menu instead of widening the page.
    page.locator("header .who").evaluate("el => { el.textContent = 'W'.repeat(2000); }")
    panel = page.locator("header .menu-panel").evaluate("el => el.scrollWidth - el.clientWidth")
    if (sideways := max(overflow(page), panel)) > 0:
        problems.append(f"menu: a long name scrolls sideways by {sideways}px")
    nav.get_by_role("link", name="Users").click()
    page.wait_for_url(live_server("/admin/users"))
    assert page.get_by_role("heading", level=1).is_visible()

    assert not problems, "\n".join(problems)


def test_wide_table_scrolls_inside_its_card_with_the_first_column_fixed(page, live_server, screenshot):
    """The passages table is wider than a phone: it scrolls in its own box, and the passage stays in view."""
    page.set_viewport_size(SIZES["phone"])
    name, username, path = next(p for p in main_pages(live_server) if p[0] == "batch")
    switch_user(page, live_server, None, username)
    page.goto(path)
    table = page.locator("table.passages")
    box = table.locator("xpath=..")
    assert box.evaluate("el => el.classList.contains('table-wrap')")
    assert box.evaluate("el => getComputedStyle(el).overflowX") == "auto"
    assert box.evaluate("el => el.scrollWidth > el.clientWidth"), "the passages table should be wider than a phone"
    assert overflow(page) <= 0

    first = table.locator("tbody tr").first.locator("td, th").first
    passage = first.inner_text()
    assert passage.startswith("P"), passage
    left_before = first.evaluate("el => el.getBoundingClientRect().left")
    box.evaluate("el => { el.scrollLeft = el.scrollWidth; }")
    # The last column is reachable, whole, inside the viewport; the first column has not moved.
    last_header = table.locator("thead th").last
    assert last_header.inner_text().startswith("Vessels")
    right = last_header.evaluate("el => el.getBoundingClientRect().right")
    assert right <= SIZES["phone"]["width"], right
    assert box.evaluate("el => el.scrollLeft") > 0
    assert abs(first.evaluate("el => el.getBoundingClientRect().left") - left_before) <= 1  # the table's border
    assert first.is_visible()
    first.scroll_into_view_if_needed()
    screenshot("layout-phone-passages-scrolled")

    # A cell holding one 2,000-character word widens the table inside its box, never the page.
    table.locator("tbody td").nth(7).evaluate("el => { el.textContent = 'V'.repeat(2000); }")
    assert overflow(page) <= 0
    assert box.evaluate("el => el.getBoundingClientRect().right") <= SIZES["phone"]["width"]
