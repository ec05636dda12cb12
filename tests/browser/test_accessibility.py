"""Every main page passes axe-core, in both themes (issue 15, items 5, 6 and 8).

axe-core comes bundled with axe-playwright-python (requirements-dev.txt); it is injected into
each page through Playwright (the DevTools protocol, which the page's CSP does not govern) and
run there. A page fails on any violation of impact "serious" or "critical" (colour contrast,
names of controls, ARIA misuse…); the failure lists each rule, where, and the help text.

The theme is chosen as a person chooses it, with the header's switch: on the sign-in page
(a cookie), then signed in as an admin (the profile), so every admin page is reached too.
The batch page of each theme is kept as docs/theme-light.png and docs/theme-dark.png.
"""
from __future__ import annotations

import re
import shutil

import pytest

pytest.importorskip("playwright.sync_api",
                    reason="Playwright is not installed (pip install -r requirements-dev.txt)")
pytest.importorskip("axe_playwright_python",
                    reason="axe-playwright-python is not installed (pip install -r "
                           "requirements-dev.txt)")

from axe_playwright_python.sync_playwright import Axe  # noqa: E402
from playwright.sync_api import expect  # noqa: E402
from sqlalchemy import select  # noqa: E402

from tests.browser.support import article_ids, sign_in, submit_batch  # noqa: E402
from tests.helpers import wait_batch_final  # noqa: E402
from tests.support import ACCOUNTS, ROOT  # noqa: E402

THEME_SHOTS = {"light": ROOT / "docs" / "theme-light.png",
               "dark": ROOT / "docs" / "theme-dark.png"}
BLOCKING = ("serious", "critical")
# What each theme paints the page with (--bg), to tell that the CSS took the choice.
BACKGROUNDS = {"light": "rgb(246, 247, 249)", "dark": "rgb(14, 17, 23)"}
SWITCH = {"light": "Light", "dark": "Dark", "system": "Auto"}

_axe = None


def axe() -> Axe:
    global _axe
    if _axe is None:
        _axe = Axe()  # reads the bundled axe.min.js once
    return _axe


def blocking_violations(page) -> list[str]:
    """axe-core's serious and critical findings on the page, one line per element."""
    results = axe().run(page)
    found = []
    for violation in results.response["violations"]:
        if violation.get("impact") not in BLOCKING:
            continue
        for node in violation["nodes"]:
            found.append(f"{violation['id']} ({violation['impact']}) at {node['target']}: "
                         f"{violation['help']} — {node.get('failureSummary', '')}")
    return found


def choose_theme(page, theme: str) -> None:
    """Press the header's switch; the server answers with the same page in that theme."""
    page.get_by_role("group", name="Theme").get_by_role("button", name=SWITCH[theme]).click()
    expect(page.locator("html")).to_have_attribute("data-theme", theme)
    expect(page.get_by_role("button", name=SWITCH[theme])).to_have_attribute("aria-pressed",
                                                                            "true")


def background(page) -> str:
    return page.evaluate("getComputedStyle(document.body).backgroundColor")


@pytest.fixture
def finished_batch(app, fake):
    """A small finished batch of the admin's, an article of it, and a version of that
    article: the subjects of the batch, article and version pages."""
    from webapp.extensions import db
    from webapp.models import ArticleVersion

    fake.latency = 0.2
    batch_id = submit_batch(app, ACCOUNTS["admin"][0], "Accessible autumn features",
                            ["Autumn apple harvest: a field guide",
                             "Ten soups for the first cold week",
                             "Where the leaves turn first"])
    wait_batch_final(app, batch_id)
    article_id = article_ids(app, batch_id)[0]
    with app.app_context():
        version_id = db.session.scalar(select(ArticleVersion.id)
                                       .where(ArticleVersion.article_id == article_id))
    assert version_id is not None, "a written article has its first version"
    return batch_id, article_id, version_id


def main_pages(app, batch_id: int, article_id: int, version_id: int) -> dict[str, str]:
    pages = {
        "dashboard": "/",
        "new batch": "/batches/new",
        "batch": f"/batches/{batch_id}",
        "article": f"/articles/{article_id}",
        "article edit": f"/articles/{article_id}/edit",
        "version": f"/articles/{article_id}/versions/{version_id}",
        "templates": "/templates",
        "template form": "/templates/new",
        "API tokens": "/account/tokens",
        "admin users": "/admin/users",
        "audit log": "/admin/audit",
        "system": "/admin/system",
        "destinations": "/admin/destinations",
    }
    if any(rule.rule == "/review" for rule in app.url_map.iter_rules()):
        pages["review queue"] = "/review"
    return pages


def test_every_main_page_passes_axe_in_both_themes(page, app, finished_batch, shot):
    batch_id, article_id, version_id = finished_batch
    pages = main_pages(app, batch_id, article_id, version_id)
    problems: list[str] = []

    def check(name: str, theme: str):
        expect(page.locator("html")).to_have_attribute("data-theme", theme)
        assert background(page) == BACKGROUNDS[theme], f"{name}: not drawn in {theme}"
        problems.extend(f"{name} [{theme}]: {line}" for line in blocking_violations(page))
        return shot(page, f"{name}-{theme}", full_page=True)

    # Signed out: the choice is a cookie.
    page.goto("/login")
    choose_theme(page, "dark")
    check("sign-in", "dark")
    sign_in(page, *ACCOUNTS["admin"])

    for theme in ("dark", "light"):
        if theme != "dark":  # signed in: kept on the profile
            choose_theme(page, theme)
        for name, path in pages.items():
            page.goto(path)
            if name == "batch":
                expect(page.locator("#batch-progress .summary .badge")).to_have_text(
                    "succeeded")
            taken = check(name, theme)
            if name == "batch":
                THEME_SHOTS[theme].parent.mkdir(exist_ok=True)
                shutil.copyfile(taken, THEME_SHOTS[theme])
        if "bulk.bulk_preview" in app.view_functions:
            # A state rather than a page: the dashboard with a bulk action's confirmation
            # open (nothing is confirmed, so nothing changes for the next theme).
            page.goto("/")
            page.locator(f"#pick-batch-{batch_id}").check()
            page.get_by_role("button", name="Continue to the confirmation").click()
            confirm = page.locator("#bulk-panel").get_by_role("button", name="Confirm")
            expect(confirm).to_be_visible()
            check("dashboard with a bulk confirmation", theme)

    # Signed out again, the sign-in page keeps the last choice (the cookie).
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login"))
    check("sign-in", "light")

    assert not problems, "axe-core found serious or critical violations:\n" + "\n".join(problems)


def test_without_a_choice_the_page_follows_the_system(page, app):
    """"Auto" pins nothing: the CSS follows prefers-color-scheme, whichever it is."""
    page.goto("/login")
    choose_theme(page, "dark")
    page.get_by_role("group", name="Theme").get_by_role("button", name=SWITCH["system"]).click()
    expect(page.get_by_role("button", name=SWITCH["system"])).to_have_attribute("aria-pressed",
                                                                               "true")
    assert page.locator("html").get_attribute("data-theme") is None
    for scheme in ("dark", "light"):
        page.emulate_media(color_scheme=scheme)
        assert background(page) == BACKGROUNDS[scheme]
    # A choice wins over the system's setting.
    choose_theme(page, "light")
    page.emulate_media(color_scheme="dark")
    assert background(page) == BACKGROUNDS["light"]


def test_the_skip_link_and_the_focus_ring(page, app):
    """The first Tab reaches "Skip to main content", drawn where it can be seen with a
    focus outline; following it puts the keyboard in the main content; and every control
    the keyboard reaches shows where it is."""
    sign_in(page, *ACCOUNTS["admin"])
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to main content")
    expect(skip).to_be_focused()
    assert skip.bounding_box()["y"] >= 0, "the skip link stays off screen when focused"
    outline = skip.evaluate("e => getComputedStyle(e).outlineStyle + ' ' + "
                            "getComputedStyle(e).outlineWidth")
    assert outline.startswith("solid") and not outline.endswith(" 0px"), outline
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()

    # Every control the keyboard reaches shows a solid ring of at least 2 px, in both themes.
    for theme in ("dark", "light"):
        choose_theme(page, theme)
        for path in ("/", "/batches/new", "/templates/new", "/account/tokens"):
            page.goto(path)
            rings = tab_through(page)
            assert len(rings) > 10, f"{path}: the keyboard reached only {len(rings)} controls"
            bare = [what for what, ring in rings if not ring]
            assert not bare, f"{path} [{theme}]: no visible focus on {bare}"


# The focused element, and whether it draws an outline of 2 px or more.
_FOCUSED = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return null;
  const s = getComputedStyle(e);
  const what = e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
               (e.name ? '[name=' + e.name + ']' : '') + ' ' +
               (e.textContent || '').trim().slice(0, 30);
  return [what, s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2];
}"""


def tab_through(page, limit: int = 120) -> list[tuple[str, bool]]:
    """(element, has a ring) for each stop of the Tab key, from the top of the page on."""
    page.locator("body").evaluate("b => b.focus()")
    seen: list[tuple[str, bool]] = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate(_FOCUSED)
        if focused is None or (seen and focused[0] == seen[0][0]):
            break  # out of the page, or round again
        seen.append(tuple(focused))
    return seen


def test_the_live_region_says_once_that_the_batch_finished(page, app, fake):
    """The polls fill the page's polite live region when the batch finishes; it keeps
    that one sentence (the polls after it announce nothing new)."""
    fake.latency = 1.5
    batch_id = submit_batch(app, ACCOUNTS["admin"][0], "Announced in the browser",
                            ["First of two", "Second of two"])
    sign_in(page, *ACCOUNTS["admin"])
    page.goto(f"/batches/{batch_id}")
    region = page.locator("#batch-announcement")
    expect(region).to_have_attribute("aria-live", "polite")
    expect(region).to_have_attribute("role", "status")
    expect(region).to_have_text("")
    expect(page.locator("#batch-progress .summary .badge")).to_have_text("succeeded",
                                                                        timeout=60_000)
    expect(region).to_have_text("Batch “Announced in the browser” finished: every article "
                                "was written.")
