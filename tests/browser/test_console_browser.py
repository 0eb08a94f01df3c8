"""The web console in a real browser: the real ``portero serve`` process, headless Chromium via Selenium.

One gateway and one browser for the whole module (starting either costs seconds). The gateway has
``[console] enabled = true`` and no ``[telegram]``: the console alone approves. An MCP client's
``tools/call`` that needs approval runs in a background thread (it blocks until someone decides) while
the browser decides it. Every page visited is saved as a screenshot (see ``conftest.shot``).

The tests run in file order and share state (the audit rows of the approval tests are what the audit
test filters), but each logs in by itself, so any one of them also runs alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.integration.harness import TOKEN, McpHttpClient, text_of

from .conftest import PASSWORD, WAIT, ConsoleGateway, browser_missing

if browser_missing():
    pytest.skip(browser_missing(), allow_module_level=True)

from selenium.common.exceptions import StaleElementReferenceException, WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

COOKIE = "portero_console"

Shot = Callable[[Any, str], Path]


# ------------------------------------------------------------------------------------------ helpers


def wait(driver: Any, timeout: float = WAIT) -> WebDriverWait:  # type: ignore[type-arg]
    return WebDriverWait(
        driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    )


def path_of(driver: Any) -> str:
    return urlsplit(driver.current_url).path


def body_text(driver: Any) -> str:
    """The page's text; "" while the page is being replaced (a click's navigation can take the body away
    between finding it and reading it: Chromium then says "Node ... does not belong to the document")."""
    try:
        return str(driver.find_element(By.TAG_NAME, "body").text)
    except WebDriverException:  # StaleElementReferenceException is one too
        return ""


# Texts of a page that answers a submitted form with a refusal: seen instead of the page expected, they
# end the wait at once (with what the browser shows) rather than after the whole timeout.
REFUSALS = ("Forbidden", "Refused", "Wrong password", "Too many", "Not found")


def settle(driver: Any, done: Callable[[Any], Any], what: str) -> Any:
    """Wait until ``done(driver)`` is truthy (its value is returned); fail at once with the page's text
    when the browser shows a refusal instead."""
    found: list[Any] = []

    def check(d: Any) -> bool:
        value = done(d)
        if not value and any(r in body_text(d) for r in REFUSALS):
            value = done(d)  # the page may have arrived between the two reads: look again, then stop
            if not value:
                return True
        if value:
            found.append(value)
        return bool(value)

    wait(driver).until(check, what)
    if not found:
        raise AssertionError(f"{what}; the browser shows {driver.current_url}:\n{body_text(driver)[:800]}")
    return found[0]


def login(driver: Any, gw: ConsoleGateway, password: str = PASSWORD) -> None:
    """Log in through form#login (a no-op when the browser already has a session)."""
    driver.get(gw.console + "/")
    if path_of(driver) != "/console/login":
        return
    form = driver.find_element(By.CSS_SELECTOR, "form#login")
    form.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys(password)
    form.find_element(By.CSS_SELECTOR, "button#login-submit").click()
    settle(
        driver,
        lambda d: path_of(d) == "/console/" and d.find_elements(By.CSS_SELECTOR, "section#servers"),
        "logging in did not lead to the overview",
    )


def session_cookie(driver: Any) -> str:
    c = driver.get_cookie(COOKIE)
    assert c is not None, f"no {COOKIE} cookie: {driver.get_cookies()}"
    return str(c["value"])


def http(gw: ConsoleGateway, driver: Any | None = None) -> httpx.Client:
    """An httpx client on the gateway, carrying the browser's session cookie when a driver is given."""
    cookies = {COOKIE: session_cookie(driver)} if driver is not None else {}
    return httpx.Client(base_url=gw.url, cookies=cookies, timeout=30, follow_redirects=False)


def form_fields(form: Any) -> dict[str, str]:
    """The named inputs of a form as the browser would submit them (text, hidden, selects)."""
    fields: dict[str, str] = {}
    for el in form.find_elements(By.CSS_SELECTOR, "input[name], select[name], textarea[name]"):
        if el.get_attribute("type") in ("submit", "button", "checkbox", "radio"):
            continue
        fields[str(el.get_attribute("name"))] = str(el.get_attribute("value") or "")
    return fields


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as ex:
        yield ex


def call_in_background(
    pool: ThreadPoolExecutor, gw: ConsoleGateway, tool: str, arguments: dict[str, Any]
) -> Future[dict[str, Any]]:
    """An MCP client (initialize, then tools/call with the bearer token) in a worker thread; the future
    is the JSON-RPC answer. The call blocks in the gateway until the approval is decided."""

    def run() -> dict[str, Any]:
        client = McpHttpClient(gw.url)
        client.http.timeout = httpx.Timeout(180)
        try:
            return client.request("tools/call", {"name": tool, "arguments": arguments})
        finally:
            client.close()

    return pool.submit(run)


def mcp_call(gw: ConsoleGateway, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    client = McpHttpClient(gw.url)
    try:
        return client.request("tools/call", {"name": tool, "arguments": arguments})
    finally:
        client.close()


def wait_approval(driver: Any, tool: str, needle: str) -> Any:
    """The article.approval of ``tool`` whose text shows ``needle`` (an argument of this test's call)."""

    def find(d: Any) -> Any:
        for art in d.find_elements(By.CSS_SELECTOR, f'article.approval[data-tool="{tool}"]'):
            if needle in art.text:
                return art
        return False

    return wait(driver).until(find, f"no pending approval of {tool} showing {needle!r}")


def wait_audit(gw: ConsoleGateway, where: str, *args: Any) -> dict[str, Any]:
    """The newest audit row matching ``where`` once it has its outcome (written as the call ends)."""
    found: list[dict[str, Any]] = []

    def settled(_: Any) -> bool:
        rows = gw.db_rows(f"SELECT * FROM audit WHERE {where} ORDER BY id DESC LIMIT 1", *args)
        if rows and rows[0]["outcome"] != "pending":
            found[:] = rows
            return True
        return False

    WebDriverWait(None, WAIT, poll_frequency=0.1).until(settled, f"no audit row where {where} {args}")
    return found[0]


def flash_text(driver: Any) -> str:
    el = settle(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "p.flash"), "no p.flash after the POST")
    return str(el[0].text)


# ------------------------------------------------------------------------------------------ tests


def test_without_a_session_every_page_redirects_to_login(console_gateway: ConsoleGateway) -> None:
    gw = console_gateway
    with http(gw) as c:
        for page in (
            "/console/",
            "/console/approvals",
            "/console/audit",
            "/console/grants",
            "/console/pins",
            "/console/clients",
        ):
            r = c.get(page)
            assert r.status_code == 303, (page, r.status_code, r.text[:300])
            assert urlsplit(r.headers["location"]).path == "/console/login", (page, r.headers)
            # The MCP bearer token never logs in, not as an Authorization header either.
            r = c.get(page, headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 303 and urlsplit(r.headers["location"]).path == "/console/login", page


def test_wrong_password_is_refused(console_gateway: ConsoleGateway, make_driver: Any, shot: Shot) -> None:
    gw = console_gateway
    d = make_driver()  # a browser of its own: the shared one logs in for the other tests
    d.get(gw.console + "/")
    wait(d).until(lambda d: path_of(d) == "/console/login")
    form = d.find_element(By.CSS_SELECTOR, "form#login")
    assert form.get_attribute("method").lower() == "post"
    assert urlsplit(form.get_attribute("action")).path == "/console/login"
    assert form.find_element(By.CSS_SELECTOR, "input[name=password]").get_attribute("type") == "password"
    assert form.find_elements(By.CSS_SELECTOR, "input[type=hidden][name=csrf]")
    shot(d, "login")
    for password in ("wrong-password-123", TOKEN):  # the bearer token is not a password either
        d.get(gw.console + "/login")
        form = d.find_element(By.CSS_SELECTOR, "form#login")
        form.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys(password)
        form.find_element(By.CSS_SELECTOR, "button#login-submit").click()
        settle(d, lambda d: "Wrong password" in body_text(d), "no 'Wrong password' page")
        assert d.get_cookie(COOKIE) is None, d.get_cookies()
    shot(d, "login-wrong-password")
    d.get(gw.console + "/")
    assert path_of(d) == "/console/login"
    events = [
        json.loads(r["detail"]) for r in gw.db_rows("SELECT detail FROM events WHERE kind = 'console-login'")
    ]
    assert [e["result"] for e in events].count("wrong-password") >= 2, events
    assert all("peer" in e for e in events), events
    d.quit()  # three Chromiums at once are a lot for 2 cores; the module's fixture tolerates a quit driver


def test_login_and_overview(console_gateway: ConsoleGateway, driver: Any, shot: Shot) -> None:
    gw = console_gateway
    login(driver, gw)
    assert session_cookie(driver)
    for section in ("servers", "sessions", "pending", "recent"):
        assert driver.find_elements(By.CSS_SELECTOR, f"section#{section}"), section
    row = driver.find_element(By.CSS_SELECTOR, 'section#servers tr.server[data-name="t"]')
    assert "ready" in row.text, row.text
    shot(driver, "overview")
    events = [
        json.loads(r["detail"]) for r in gw.db_rows("SELECT detail FROM events WHERE kind = 'console-login'")
    ]
    assert any(e["result"] == "ok" for e in events), events


def test_approve_a_waiting_call_with_live_refresh(
    console_gateway: ConsoleGateway, driver: Any, pool: ThreadPoolExecutor, shot: Shot
) -> None:
    gw = console_gateway
    login(driver, gw)
    driver.get(gw.console + "/approvals")
    wait(driver).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#live")))
    # A mark on this document: still there after the approval shows, so the page was not reloaded.
    driver.execute_script("window.__porteroMark = 'same-page';")
    future = call_in_background(pool, gw, "t__delete_thing", {"what": "alpha-file"})

    art = wait_approval(driver, "t/delete_thing", "alpha-file")
    assert driver.execute_script("return window.__porteroMark") == "same-page", "the page was reloaded"
    assert not future.done(), future.result() if future.done() else None
    assert re.fullmatch(r"approval-.+", art.get_attribute("id") or ""), art.get_attribute("id")
    assert "t/delete_thing" in art.text
    # The tab's title and the menu's badge count it too (seen from another tab), still without a reload.
    wait(driver).until(lambda d: d.title.startswith("(1) Approvals"), "the title does not count the call")
    badge = driver.find_element(By.ID, "pending-badge")
    assert badge.is_displayed() and badge.text == "1"
    shot(driver, "approvals-pending")

    art.find_element(By.CSS_SELECTOR, "button[name=action][value=approve]").click()
    wait(driver).until(lambda d: path_of(d) == "/console/approvals")
    assert "Approved" in flash_text(driver)
    assert driver.title == "Approvals · Portero"
    assert not driver.find_element(By.ID, "pending-badge").is_displayed()
    shot(driver, "approvals-approved")

    resp = future.result(timeout=WAIT)
    assert "result" in resp, resp
    assert not resp["result"].get("isError"), resp
    assert text_of(resp["result"]) == "deleted alpha-file"

    row = wait_audit(gw, "tool = ? AND arguments LIKE ?", "t/delete_thing", "%alpha-file%")
    assert (row["decision"], row["source"], row["outcome"]) == ("approved", "console", "ok"), row


def test_deny_a_waiting_call(
    console_gateway: ConsoleGateway, driver: Any, pool: ThreadPoolExecutor, shot: Shot
) -> None:
    gw = console_gateway
    login(driver, gw)
    driver.get(gw.console + "/approvals")
    wait(driver).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#live")))
    future = call_in_background(pool, gw, "t__delete_thing", {"what": "beta-file"})

    art = wait_approval(driver, "t/delete_thing", "beta-file")
    reason = art.find_elements(By.CSS_SELECTOR, "input[name=reason]")
    if reason:
        reason[0].send_keys("not this one")
    art.find_element(By.CSS_SELECTOR, "button[name=action][value=deny]").click()
    wait(driver).until(lambda d: path_of(d) == "/console/approvals")
    assert "Denied" in flash_text(driver)
    shot(driver, "approvals-denied")

    resp = future.result(timeout=WAIT)
    assert "result" in resp, resp
    assert resp["result"]["isError"] is True, resp
    assert "denied" in text_of(resp["result"]).lower(), resp
    assert "deleted" not in text_of(resp["result"]), resp

    row = wait_audit(gw, "tool = ? AND arguments LIKE ?", "t/delete_thing", "%beta-file%")
    assert (row["decision"], row["source"], row["outcome"]) == ("rejected", "console", "refused"), row


def test_a_typed_reason_survives_the_live_refresh(
    console_gateway: ConsoleGateway, driver: Any, pool: ThreadPoolExecutor, shot: Shot
) -> None:
    """The admin types a reason, looks away (the field loses the focus), another call arrives and the page
    refreshes: the reason is still there, and Deny sends it to the model."""
    gw = console_gateway
    login(driver, gw)
    driver.get(gw.console + "/approvals")
    first = call_in_background(pool, gw, "t__delete_thing", {"what": "gamma-file"})
    art = wait_approval(driver, "t/delete_thing", "gamma-file")
    field = art.find_element(By.CSS_SELECTOR, "input[name=reason]")
    field_id = field.get_attribute("id")
    field.send_keys("use the archive instead")
    driver.find_element(By.TAG_NAME, "h1").click()  # the field loses the focus: refreshes go on
    second = call_in_background(pool, gw, "t__delete_thing", {"what": "delta-file"})
    other = wait_approval(driver, "t/delete_thing", "delta-file")  # arrived by a refresh
    kept = driver.find_element(By.ID, field_id)
    assert kept.get_attribute("value") == "use the archive instead"
    shot(driver, "approvals-reason-kept")
    kept.find_element(By.XPATH, "./ancestor::form").find_element(
        By.CSS_SELECTOR, "button[name=action][value=deny]"
    ).click()
    assert "the model reads your reason" in flash_text(driver)
    resp = first.result(timeout=WAIT)
    assert (
        text_of(resp["result"])
        == "Call to t/delete_thing refused: denied by the admin: use the archive instead."
    )
    # The other call is still waiting; deny it too, without a reason.
    other = wait_approval(driver, "t/delete_thing", "delta-file")
    other.find_element(By.CSS_SELECTOR, "button[name=action][value=deny]").click()
    assert second.result(timeout=WAIT)["result"]["isError"] is True


def test_audit_filter_and_record(console_gateway: ConsoleGateway, driver: Any, shot: Shot) -> None:
    gw = console_gateway
    # Calls that need no approval: one allowed, one denied by a rule.
    assert text_of(mcp_call(gw, "t__echo", {"text": "gamma-echo"})["result"]) == "gamma-echo"
    assert mcp_call(gw, "t__add", {"a": 1, "b": 2})["result"]["isError"] is True
    wait_audit(gw, "tool = 't/add'")
    login(driver, gw)
    driver.get(gw.console + "/audit")
    wait(driver).until(EC.presence_of_element_located((By.CSS_SELECTOR, "table#audit")))
    shown = [r.get_attribute("data-id") for r in driver.find_elements(By.CSS_SELECTOR, "tr.audit-row")]
    all_ids = [str(r["id"]) for r in gw.db_rows("SELECT id FROM audit ORDER BY id DESC")]
    assert shown == all_ids[:50], (shown, all_ids)
    shot(driver, "audit")

    def apply_filter(tool: str, decision: str) -> list[str]:
        form = driver.find_element(By.CSS_SELECTOR, "form#audit-filter")
        assert (form.get_attribute("method") or "get").lower() == "get"
        box = form.find_element(By.CSS_SELECTOR, "[name=tool]")
        box.clear()
        box.send_keys(tool)
        # The options carry no value attribute: their text is the value submitted.
        Select(form.find_element(By.CSS_SELECTOR, "select[name=decision]")).select_by_visible_text(decision)
        form.submit()
        wait(driver).until(lambda d: parse_qs(urlsplit(d.current_url).query).get("tool") == [tool])
        wait(driver).until(EC.presence_of_element_located((By.CSS_SELECTOR, "table#audit")))
        return [
            str(r.get_attribute("data-id")) for r in driver.find_elements(By.CSS_SELECTOR, "tr.audit-row")
        ]

    approved = apply_filter("t/delete_*", "approved")
    expected = gw.db_rows(
        "SELECT id FROM audit WHERE tool GLOB 't/delete_*' AND decision = 'approved' ORDER BY id DESC"
    )
    assert approved == [str(r["id"]) for r in expected], approved  # empty when run alone
    for r in driver.find_elements(By.CSS_SELECTOR, "tr.audit-row"):
        assert "t/delete_thing" in r.text, r.text
    shot(driver, "audit-filtered-approved")

    denied = apply_filter("t/*", "deny")
    expected = gw.db_rows("SELECT id FROM audit WHERE tool GLOB 't/*' AND decision = 'deny' ORDER BY id DESC")
    assert denied == [str(r["id"]) for r in expected] and denied, denied
    for r in driver.find_elements(By.CSS_SELECTOR, "tr.audit-row"):
        assert "t/add" in r.text, r.text
    shot(driver, "audit-filtered-deny")

    # One record in full: the console-approved call.
    record = gw.db_rows("SELECT * FROM audit WHERE arguments LIKE '%alpha-file%' ORDER BY id DESC LIMIT 1")
    if not record:
        pytest.skip("needs test_approve_a_waiting_call_with_live_refresh to have run first")
    apply_filter("t/delete_*", "approved")
    link = driver.find_element(By.CSS_SELECTOR, f'tr.audit-row[data-id="{record[0]["id"]}"] a')
    link.click()
    wait(driver).until(lambda d: path_of(d) == f"/console/audit/{record[0]['id']}")
    body = driver.find_element(By.TAG_NAME, "body").text
    for needle in ("t/delete_thing", "alpha-file", "approved", "console"):
        assert needle in body, (needle, body)
    shot(driver, "audit-record")


def test_grant_add_list_and_revoke(
    console_gateway: ConsoleGateway, driver: Any, pool: ThreadPoolExecutor, shot: Shot
) -> None:
    gw = console_gateway
    login(driver, gw)
    driver.get(gw.console + "/grants")
    form = wait(driver).until(EC.presence_of_element_located((By.CSS_SELECTOR, "form#grant-add")))
    form.find_element(By.CSS_SELECTOR, "[name=pattern]").send_keys("t/whoami")
    duration = form.find_element(By.CSS_SELECTOR, "[name=duration]")
    if duration.tag_name == "select":
        Select(duration).select_by_value("30m")
    else:
        duration.clear()
        duration.send_keys("30m")
    form.submit()
    row = settle(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, 'tr.grant[data-pattern="t/whoami"]'),
        "the new grant is not listed",
    )[0]
    shot(driver, "grants-added")
    grants = gw.db_rows("SELECT * FROM grants WHERE pattern = 't/whoami' AND revoked_at IS NULL")
    assert len(grants) == 1 and grants[0]["expires_at"] - grants[0]["created_at"] == pytest.approx(
        1800, abs=5
    )

    # The grant is real: t/whoami (require-approval) now runs without anyone deciding.
    resp = call_in_background(pool, gw, "t__whoami", {}).result(timeout=WAIT)
    assert "result" in resp and not resp["result"].get("isError"), resp

    row.find_element(By.XPATH, ".//button[normalize-space()='Revoke']").click()
    settle(
        driver,
        lambda d: (
            path_of(d) == "/console/grants"
            and d.find_elements(By.CSS_SELECTOR, "form#grant-add")
            and not d.find_elements(By.CSS_SELECTOR, 'tr.grant[data-pattern="t/whoami"]')
        ),
        "the revoked grant is still listed",
    )
    shot(driver, "grants-revoked")
    assert gw.db_rows("SELECT * FROM grants WHERE pattern = 't/whoami' AND revoked_at IS NULL") == []


def test_post_without_csrf_is_refused(console_gateway: ConsoleGateway, driver: Any, shot: Shot) -> None:
    gw = console_gateway
    login(driver, gw)
    driver.get(gw.console + "/grants")
    form = wait(driver).until(EC.presence_of_element_located((By.CSS_SELECTOR, "form#grant-add")))
    # In the browser: the hidden csrf input removed before submitting.
    driver.execute_script("arguments[0].querySelector('input[name=csrf]').remove();", form)
    form.find_element(By.CSS_SELECTOR, "[name=pattern]").send_keys("t/log")
    form.submit()
    settle(
        driver, lambda d: "Refused" in body_text(d) and "Forbidden" not in body_text(d), "no 'Refused' page"
    )
    shot(driver, "grant-without-csrf")
    assert gw.db_rows("SELECT * FROM grants WHERE pattern = 't/log'") == []

    # Over HTTP with the browser's session: no csrf, and a wrong one -> 403 "Refused", nothing done.
    with http(gw, driver) as c:
        for extra in ({}, {"csrf": "not-a-real-token"}):
            r = c.post("/console/grants", data={"pattern": "t/log", "duration": "30m", **extra})
            assert r.status_code == 403 and "Refused" in r.text, (r.status_code, r.text[:300])
    assert gw.db_rows("SELECT * FROM grants WHERE pattern = 't/log'") == []


def test_replayed_form_is_refused(console_gateway: ConsoleGateway, driver: Any) -> None:
    gw = console_gateway
    login(driver, gw)
    driver.get(gw.console + "/grants")
    form = wait(driver).until(EC.presence_of_element_located((By.CSS_SELECTOR, "form#grant-add")))
    fields = form_fields(form)
    assert fields.get("csrf"), fields
    fields.update(pattern="t/echo", duration="30m")
    with http(gw, driver) as c:
        first = c.post("/console/grants", data=fields)
        assert first.status_code == 303, (first.status_code, first.text[:300])
        second = c.post("/console/grants", data=fields)
        assert second.status_code == 403 and "Refused" in second.text, (second.status_code, second.text[:300])
    assert len(gw.db_rows("SELECT * FROM grants WHERE pattern = 't/echo'")) == 1


def test_approve_without_javascript(
    console_gateway: ConsoleGateway, nojs_driver: Any, pool: ThreadPoolExecutor, shot: Shot
) -> None:
    gw = console_gateway
    d = nojs_driver
    login(d, gw)  # the login form works without JavaScript too
    d.get(gw.console + "/approvals")
    future = call_in_background(pool, gw, "t__delete_thing", {"what": "delta-file"})

    def refreshed_until_shown(d: Any) -> Any:
        for art in d.find_elements(By.CSS_SELECTOR, 'article.approval[data-tool="t/delete_thing"]'):
            if "delta-file" in art.text:
                return art
        d.find_element(By.CSS_SELECTOR, "a#refresh").click()  # no live refresh without JavaScript
        return False

    art = wait(d).until(refreshed_until_shown, "the pending approval never showed after a#refresh")
    shot(d, "approvals-nojs-pending")
    art.find_element(By.CSS_SELECTOR, "button[name=action][value=approve]").click()
    wait(d).until(lambda d: path_of(d) == "/console/approvals")
    assert "Approved" in flash_text(d)
    shot(d, "approvals-nojs-approved")
    resp = future.result(timeout=WAIT)
    assert text_of(resp["result"]) == "deleted delta-file", resp
    row = wait_audit(gw, "arguments LIKE ?", "%delta-file%")
    assert (row["decision"], row["source"]) == ("approved", "console"), row


def test_pins_approve_a_changed_definition(console_gateway: ConsoleGateway, driver: Any, shot: Shot) -> None:
    gw = console_gateway
    # trust-first (no [pins]): a changed definition is quarantined until the admin approves it.
    resp = mcp_call(gw, "t__redescribe", {"tool": "log", "description": "Now it does something else."})
    assert text_of(resp["result"]) == "redescribed", resp
    WebDriverWait(None, WAIT, poll_frequency=0.1).until(
        lambda _: (
            gw.db_rows("SELECT state FROM pins WHERE server = 't' AND tool = 'log'")
            == [{"state": "quarantined"}]
        ),
        "t/log not quarantined",
    )
    login(driver, gw)
    driver.get(gw.console + "/pins")

    # Each quarantined definition: article.pin[data-tool] with its diff and a form (hidden key) whose
    # button[name=action] approves or blocks it.
    pin = wait(driver).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, 'article.pin[data-tool="t/log"]')),
        "no quarantined pin for t/log",
    )
    assert "changed" in pin.text and "{+something+}" in pin.text, pin.text  # a word diff of the description
    button = pin.find_element(By.CSS_SELECTOR, "form[method=post] button[name=action][value=approve]")
    shot(driver, "pins-quarantined")
    button.click()
    settle(
        driver,
        lambda d: (
            EC.staleness_of(button)(d)  # the POST answered and the page was replaced
            and path_of(d) == "/console/pins"
            and d.find_elements(By.CSS_SELECTOR, "article.pin, p#no-pins")
        ),
        "approving the pin did not lead back to the pins page",
    )
    shot(driver, "pins-approved")
    WebDriverWait(None, WAIT, poll_frequency=0.1).until(
        lambda _: (
            gw.db_rows("SELECT state FROM pins WHERE server = 't' AND tool = 'log'")
            == [{"state": "approved"}]
        ),
        "t/log not approved",
    )


def test_clients_page(console_gateway: ConsoleGateway, driver: Any, shot: Shot) -> None:
    gw = console_gateway
    login(driver, gw)
    driver.get(gw.console + "/clients")
    wait(driver).until(lambda d: path_of(d) == "/console/clients")
    assert "t/echo" in driver.find_element(By.TAG_NAME, "body").text or "t__echo" in driver.page_source
    shot(driver, "clients")


def test_static_assets_are_served_locally(console_gateway: ConsoleGateway, driver: Any) -> None:
    gw = console_gateway
    login(driver, gw)
    for asset, kind in (("console.css", "text/css"), ("console.js", "javascript")):
        with http(gw, driver) as c:
            r = c.get(f"/console/static/{asset}")
        assert r.status_code == 200 and kind in r.headers["content-type"], (asset, r.status_code, r.headers)
    for src in driver.execute_script(
        "return [...document.querySelectorAll('script[src], link[href]')].map(e => e.src || e.href)"
    ):
        assert src.startswith(gw.url + "/console/"), src  # no CDN


def test_logout(console_gateway: ConsoleGateway, driver: Any, shot: Shot) -> None:
    gw = console_gateway
    login(driver, gw)
    old = session_cookie(driver)
    logout = driver.find_element(By.CSS_SELECTOR, "form[action$='/console/logout']")
    logout.find_element(By.CSS_SELECTOR, "button").click()
    settle(
        driver,
        lambda d: path_of(d) == "/console/login" and d.find_elements(By.CSS_SELECTOR, "form#login"),
        "logging out did not lead to the login page",
    )
    shot(driver, "logged-out")
    with httpx.Client(base_url=gw.url, cookies={COOKIE: old}, timeout=30) as c:
        r = c.get("/console/", follow_redirects=False)
        assert r.status_code == 303 and urlsplit(r.headers["location"]).path == "/console/login"


def test_pages_fit_a_phone_and_label_their_controls(
    console_gateway: ConsoleGateway, make_driver: Callable[..., Any], shot: Shot
) -> None:
    """At a phone's width (390 px) no page scrolls sideways (wide tables scroll inside themselves), and
    every form control has a label or a visible text, so a screen reader can name it."""
    gw = console_gateway
    phone = make_driver()
    phone.set_window_size(390, 844)
    login(phone, gw)
    unlabelled = """
        return [...document.querySelectorAll('input:not([type=hidden]), select, button')].filter(e => {
            if (e.tagName === 'BUTTON') return !e.textContent.trim();
            return !(e.labels && e.labels.length) && !e.getAttribute('aria-label');
        }).map(e => e.outerHTML);
    """
    for page in ("", "approvals", "audit", "grants", "pins", "clients"):
        phone.get(f"{gw.console}/{page}")
        settle(phone, lambda d: d.find_elements(By.TAG_NAME, "h1"), f"/console/{page} did not load")
        overflow = phone.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        shot(phone, f"phone-{page or 'overview'}")
        assert overflow <= 1, f"/console/{page} is {overflow} px wider than a phone"
        assert phone.execute_script(unlabelled) == [], f"/console/{page}"
    phone.get(f"{gw.console}/audit")
    assert phone.find_element(By.CSS_SELECTOR, "table#audit").size["width"] <= 390
