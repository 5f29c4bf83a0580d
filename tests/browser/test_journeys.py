"""End-to-end journeys in headless Chromium against the live server with the demo network."""

from __future__ import annotations

import re

import pytest

from cellfactory.demo import DEMO_PASSWORD

pytestmark = pytest.mark.browser

TRANSPARENT = {"rgba(0, 0, 0, 0)", "transparent"}


def sign_in(page, username: str, password: str) -> None:
    page.goto("/auth/login")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def open_menu(page) -> None:
    """Below 1,100 px the links and the sign-out are in the header's "Menu": open it if it is closed."""
    menu = page.locator("header details.menu")
    if menu.count() and menu.locator("summary").is_visible() and not menu.evaluate("el => el.open"):
        menu.locator("summary").click()


def nav_link(page, label: str, *, exact: bool = False):
    """The main navigation's link `label`, shown (the menu opened on a narrow screen)."""
    open_menu(page)
    return page.get_by_role("navigation", name="Main").get_by_role("link", name=label, exact=exact)


def sign_out(page) -> None:
    open_menu(page)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/auth/login"))


def assert_styled(page) -> None:
    """The stylesheet loaded and applied: the top bar has its brand colour, the body its font size."""
    page.wait_for_load_state("load")
    background = page.locator("header.topbar").evaluate("el => getComputedStyle(el).backgroundColor")
    assert background not in TRANSPARENT, f"top bar unstyled (background {background}): app.css did not load"
    sheets = page.evaluate("() => Array.from(document.styleSheets).map(s => s.href || '')")
    assert any(href.endswith("/static/css/app.css") for href in sheets), sheets


def assert_no_csp_violations(page) -> None:
    violations = [e for e in page.console_errors if "Content Security Policy" in e or "Refused to" in e]
    assert not violations, f"the page breaks its own Content Security Policy: {violations}"


def test_technician_signs_in_sees_dashboard_and_signs_out(page, live_server, screenshot):
    response = page.goto("/auth/login")
    assert response.status == 200
    csp = response.headers["content-security-policy"]
    directives = {d.strip().split(" ", 1)[0]: d.strip() for d in csp.split(";") if d.strip()}
    assert directives["script-src"] == "script-src 'self'", csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, csp
    assert_styled(page)

    # The policy really is enforced: an inline script injected into the page does not run.
    page.evaluate("""() => { const s = document.createElement('script');
                             s.textContent = 'window.__inlineRan = true;'; document.body.appendChild(s); }""")
    assert page.evaluate("() => window.__inlineRan === true") is False
    page.console_errors.clear()

    sign_in(page, "technician.bg", DEMO_PASSWORD)
    page.wait_for_url(live_server("/"))
    full_name = "Giulia Bergamo (Technician)"
    assert page.get_by_role("heading", level=1).inner_text() == f"Good day, {full_name}"
    assert page.locator("header.topbar .who").inner_text() == full_name
    roles = page.locator("section.card", has=page.get_by_role("heading", name="Your roles"))
    assert "Technician — Cell Factory Bergamo" in roles.inner_text()
    assert page.locator("header .site-badge").inner_text() == "BG"
    # A technician sees the dashboard and alerts, not the administration pages.
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link", name="Dashboard").is_visible()
    assert nav.get_by_role("link", name="Users").count() == 0
    assert_styled(page)
    assert_no_csp_violations(page)
    screenshot("dashboard-technician")

    sign_out(page)
    assert page.get_by_role("heading", name="Sign in").is_visible()
    assert "You are signed out." in page.locator(".flash").inner_text()
    assert page.locator("header.topbar .who").count() == 0
    assert_styled(page)
    assert_no_csp_violations(page)
    screenshot("login-after-sign-out")

    # The session really ended: the dashboard asks for a sign-in again.
    page.goto("/")
    assert "/auth/login" in page.url
    assert page.get_by_role("heading", name="Sign in").is_visible()


def test_wrong_password_is_refused_on_screen(page, live_server):
    sign_in(page, "qc_analyst.mz", "not-the-password")
    assert page.locator(".form-errors").is_visible()
    assert "/auth/login" in page.url
    assert page.get_by_label("Password").input_value() == ""


def test_admin_creates_user_who_must_change_password_first(page, live_server, screenshot):
    sign_in(page, "admin.bg", DEMO_PASSWORD)
    page.wait_for_url(live_server("/"))
    nav_link(page, "Users").click()
    page.wait_for_url(re.compile(r"/admin/users"))

    page.goto("/admin/users/new")
    assert page.get_by_role("heading", name="New user").is_visible()
    assert_styled(page)
    page.get_by_label("User name").fill("elisa.ferri")
    page.get_by_label("Printed full name (used in signatures)").fill("Elisa Ferri")
    page.get_by_label("E-mail").fill("elisa.ferri@example.org")
    page.get_by_label("Role").select_option("technician")
    page.get_by_label("Site").select_option("BG")
    temporary = "Temporary-Start-2026"
    page.get_by_label("Temporary password").fill(temporary)
    screenshot("admin-new-user-form")
    page.get_by_role("button", name="Create user").click()
    page.wait_for_url(re.compile(r"/admin/users/\d+$"))
    assert "User elisa.ferri created" in page.locator(".flash").inner_text()
    assert "Elisa Ferri" in page.content()
    assert_no_csp_violations(page)
    screenshot("admin-user-created")
    sign_out(page)

    # First sign-in with the temporary password lands on the change-password page, and only there.
    sign_in(page, "elisa.ferri", temporary)
    page.wait_for_url(re.compile(r"/auth/password$"))
    assert page.get_by_role("heading", name="Change your password").is_visible()
    assert page.get_by_role("navigation", name="Main").count() == 0
    page.goto("/")
    assert page.url.endswith("/auth/password"), "the dashboard was reachable before the password was changed"
    assert "Choose your own password" in page.locator(".flash").first.inner_text()
    assert_styled(page)
    screenshot("change-password-forced")

    new_password = "Orange-Harbour-Lamp-7731"
    page.get_by_label("Current password").fill(temporary)
    page.get_by_label("New password", exact=True).fill(new_password)
    page.get_by_label("New password again").fill(new_password)
    page.get_by_role("button", name="Change password").click()
    page.wait_for_url(live_server("/"))
    # The dashboard may also warn, as a flash of its own, what the user still lacks to sign.
    assert "Your password is changed" in page.locator(".flash-success").inner_text()
    assert page.get_by_role("heading", level=1).inner_text() == "Good day, Elisa Ferri"
    assert page.get_by_role("navigation", name="Main").get_by_role("link", name="Dashboard").is_visible()
    assert_no_csp_violations(page)
    screenshot("dashboard-after-password-change")
    sign_out(page)

    # The temporary password is gone; the new one works and goes straight to the dashboard.
    sign_in(page, "elisa.ferri", temporary)
    assert page.locator(".form-errors").is_visible()
    sign_in(page, "elisa.ferri", new_password)
    page.wait_for_url(live_server("/"))
    assert page.get_by_role("heading", level=1).inner_text() == "Good day, Elisa Ferri"


def test_tablet_width_layout(page, live_server, screenshot):
    """Cleanroom tablets: at 768 px nothing overflows the viewport horizontally."""
    page.set_viewport_size({"width": 768, "height": 1024})
    sign_in(page, "qa.bg", DEMO_PASSWORD)
    page.wait_for_url(live_server("/"))
    overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the dashboard scrolls sideways by {overflow}px on a tablet"
    screenshot("dashboard-qa-tablet")
