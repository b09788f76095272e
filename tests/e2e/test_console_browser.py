"""The operators' console in headless Chromium on the local stack, one operator per role (issue 12).

Each role signs in through the page and sees the tabs and buttons its permissions allow; what the
page hides is also refused by the server: the page's own script calling a route with the operator's
token gets 403 and no data. The analyst sees customers masked only, the content writer no customers
at all, the scenario designer a scenario's diagram and report, the admin unmasks, exports and
erases. The scenario is uploaded twice, so the designer compares its two versions' diagrams side
by side and reads the last upload's report; the analyst counts the audience of its document (the
content writer has no audience panel). The analyst also sees the report's charts (the server's
SVG), LINE's unmeasured figures as words. The content writer previews a send step (the rendered text,
shown as text) and test-sends it to a staff LINE account, which the fake LINE API receives; the
analyst has neither, and the server refuses both. A wrong password shows the API's message and leaves a
`sign_in_failed` audit entry.
A screenshot of each role's view is saved under test-artifacts/console/.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from cems.adapters.dynamodb.customers import CustomerStore
from cems.cli import main as cems
from cems.line.config import LOCAL_CHANNEL_SECRET
from cems.line.webhook import sign
from cems.scenario.entrance import SUMMARY_CACHE
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select
from selenium.webdriver.support.wait import WebDriverWait

from tests.browser.chrome import chrome_driver
from tests.e2e.conftest import HANG, ROOT, LocalStackClient, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

PASSWORD = "Console-Browser-2026"
EXAMPLE = ROOT / "examples" / "scenarios" / "line_welcome.json"
SCENARIO_ID = "console-welcome"
SCENARIO_BUCKET = "scenariobucket"  # the local stack names buckets after their logical id, lower-cased
ARTIFACTS = ROOT / "test-artifacts" / "console"
NOT_MEASURED = "計測なし / not measured"
ROLES = ("admin", "scenario_designer", "content_writer", "analyst")
STAFF_LINE_ID = "U" + "7e" * 16  # a staff member's own LINE account, for test sends
STAFF_LINE = f"line:{STAFF_LINE_ID}"
WELCOME = "茶寮みどりの公式アカウントを友だち追加いただき"  # the example's welcome step's text


@dataclass(frozen=True)
class Person:
    customer_id: str
    email: str
    phone: str
    last_name: str
    first_name: str

    @property
    def personal(self) -> tuple[str, ...]:
        """What a masked page must not show anywhere."""
        digits = self.phone.replace("-", "")
        return (self.email, self.phone, digits, self.last_name, self.first_name)


@dataclass(frozen=True)
class World:
    stack: LocalStackClient
    operators: dict[str, str]  # role -> user name
    person: Person
    erasable: Person
    scenario: Path  # the scenario file uploaded last (version 2)


def seed_customer(stack: LocalStackClient, tag: str, last_name: str, first_name: str, phone: str) -> Person:
    """A customer the shop's server identified (the secret key: contact traits count only from it)."""
    user_id = f"console-{tag}-{uuid.uuid4().hex[:8]}"
    email = f"{user_id}@example.jp"
    traits = {"email": email, "phone": phone, "last_name": last_name, "first_name": first_name}
    stack.post("/v1/identify", {"userId": user_id, "traits": traits})
    customers = CustomerStore("CustomersTable", stack.dynamodb)

    def stored() -> str | None:
        stack.drain()
        return customers.customer_for_user_id(user_id)

    customer_id = eventually(stored, f"the customer {user_id}")
    assert customer_id is not None
    return Person(customer_id, email, phone, last_name, first_name)


def follow_on_line(stack: LocalStackClient) -> None:
    """A LINE user follows the shop's account: the scenario's trigger. Its welcome message is sent
    through the fake LINE API, so the report has a step with counts (and LINE's unmeasured ones)."""
    line_user_id = "U" + uuid.uuid4().hex
    event = {
        "type": "follow",
        "timestamp": int(stack.now().timestamp() * 1000),
        "source": {"type": "user", "userId": line_user_id},
        "mode": "active",
        "webhookEventId": uuid.uuid4().hex.upper()[:26],
        "deliveryContext": {"isRedelivery": False},
        "replyToken": uuid.uuid4().hex,
        "follow": {"isUnblocked": False},
    }
    raw = json.dumps({"destination": "U0f3c9a7e21b84d6c5a09e8f7d6c5b4a3", "events": [event]}).encode()
    request = urllib.request.Request(
        f"{stack.http_url}/line/webhook",
        data=raw,
        method="POST",
        headers={"Content-Type": "application/json", "X-Line-Signature": sign(raw, LOCAL_CHANNEL_SECRET)},
    )
    with urllib.request.urlopen(request, timeout=HANG) as answer:
        assert answer.status == 200

    def welcomed() -> bool:
        stack.drain()
        return any(m.get("to") == line_user_id for m in stack.line_messages())

    eventually(welcomed, "the scenario's welcome message on LINE")


def scenario_file(folder: Path, name: str = "コンソール確認 / Console check") -> Path:
    """The LINE welcome example as a scenario of this module's own: sending at any hour (the
    example's window would hold the welcome until 09:00 JST) and ahead of the example itself, which
    another module uploads to the same stack."""
    document = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    document.pop("$schema", None)
    document |= {
        "id": SCENARIO_ID,
        "name": name,
        "priority": 1000,
        "send_window": {"start": "00:00", "end": "23:59"},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{SCENARIO_ID}.json"
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


def stop_scenario(stack: LocalStackClient) -> None:
    """Stops this module's scenario on the shared stack, so no later module meets it.

    Left live, it enrols every LINE user who follows afterwards, another module's too: a broadcast
    to those users then reaches nobody, by design (at priority 1000 it outranks the broadcast, whose
    `exit.yield_to_higher_priority` keeps them out; at an equal priority its welcome would still
    take their LINE cap of one a day and defer the broadcast). Deleting the file stops it, as the
    loader documents; the runners (trigger's included) read the active scenarios at most once per
    SUMMARY_CACHE of CEMS's clock, so the clock is moved past it before the next module follows."""
    stack.client("s3").delete_object(Bucket=SCENARIO_BUCKET, Key=f"scenarios/{SCENARIO_ID}.json")

    def stopped() -> bool:
        stack.drain()
        item = stack.dynamodb.get_item(
            TableName="JourneysTable",
            Key={"pk": {"S": f"SCN#{SCENARIO_ID}"}, "sk": {"S": "ACTIVE"}},
            ConsistentRead=True,
        ).get("Item")
        return item is not None and item["state"]["S"] == "stopped"

    eventually(stopped, f"{SCENARIO_ID} stopped")
    stack.advance_clock(SUMMARY_CACHE.total_seconds() + 1)


@pytest.fixture(scope="module")
def world(local_stack: LocalStackClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("console")
    first = scenario_file(folder / "v1")
    scenario = scenario_file(folder / "v2", "コンソール確認 第2版 / Console check, second")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CEMS_AWS_PORT", str(urlparse(local_stack.aws_url).port))
        suffix = uuid.uuid4().hex[:6]
        operators = {role: f"{role.replace('_', '-')}-{suffix}" for role in ROLES}
        for role, name in operators.items():
            assert cems(["user", "add", name, "--role", role, "--password", PASSWORD]) == 0
        # The loader's poller makes it live; the CLI waits for its report.
        # Twice (a new name, so a new version): two versions to compare.
        assert cems(["scenario", "upload", str(first)]) == 0
        assert cems(["scenario", "upload", str(scenario)]) == 0
    person = seed_customer(local_stack, "view", "鈴木", "真理子", "090-3141-5926")
    erasable = seed_customer(local_stack, "erase", "高橋", "健太郎", "080-2718-2818")
    follow_on_line(local_stack)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield World(local_stack, operators, person, erasable, scenario)
    stop_scenario(local_stack)


@pytest.fixture
def chrome(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    with chrome_driver() as driver:
        # Downloads (the export) land in the test's own folder, not the machine's.
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)}
        )
        yield driver
        # The page runs under a strict CSP: anything it blocked (an inline style, a script) shows here.
        blocked = [
            e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]
        ]
        assert not blocked, blocked


# -- driving the page ---------------------------------------------------------------------------------


def wait(chrome: webdriver.Chrome) -> WebDriverWait[webdriver.Chrome]:
    return WebDriverWait(chrome, HANG)


def open_console(chrome: webdriver.Chrome, stack: LocalStackClient) -> None:
    chrome.get(f"{stack.http_url}/console")
    wait(chrome).until(expected_conditions.visibility_of_element_located((By.ID, "sign-in")))


def submit_sign_in(chrome: webdriver.Chrome, username: str, password: str) -> None:
    form = chrome.find_element(By.ID, "sign-in")
    form.find_element(By.NAME, "username").send_keys(username)
    form.find_element(By.NAME, "password").send_keys(password)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def sign_in(chrome: webdriver.Chrome, world: World, role: str) -> None:
    open_console(chrome, world.stack)
    submit_sign_in(chrome, world.operators[role], PASSWORD)
    wait(chrome).until(expected_conditions.visibility_of_element_located((By.ID, "console")))
    assert chrome.find_element(By.ID, "operator-name").text == world.operators[role]
    # Every role may see scenarios, so the page opens on them: wait for the list.
    scenario_row(chrome)


def visible_tabs(chrome: webdriver.Chrome) -> list[str]:
    return [
        t.get_attribute("data-tab") or ""
        for t in chrome.find_elements(By.CSS_SELECTOR, "#tabs .tab")
        if t.is_displayed()
    ]


def shown(chrome: webdriver.Chrome, element_id: str) -> bool:
    return chrome.find_element(By.ID, element_id).is_displayed()


def tab(chrome: webdriver.Chrome, name: str) -> None:
    chrome.find_element(By.CSS_SELECTOR, f'#tabs .tab[data-tab="{name}"]').click()
    wait(chrome).until(expected_conditions.visibility_of_element_located((By.ID, f"panel-{name}")))


def scenario_row(chrome: webdriver.Chrome) -> WebElement:
    found: WebElement = wait(chrome).until(
        expected_conditions.visibility_of_element_located(
            (By.CSS_SELECTOR, f'#scenario-table tr[data-scenario="{SCENARIO_ID}"]')
        )
    )
    return found


def open_scenario(chrome: webdriver.Chrome) -> WebElement:
    """Opens the scenario and returns its diagram once drawn."""
    scenario_row(chrome).find_element(By.CSS_SELECTOR, "button").click()
    svg: WebElement = wait(chrome).until(
        expected_conditions.visibility_of_element_located(
            (By.CSS_SELECTOR, f'#diagram svg[data-scenario="{SCENARIO_ID}"]')
        )
    )
    return svg


def find_customer(chrome: webdriver.Chrome, person: Person) -> None:
    """Searches by email and opens the one customer found (masked)."""
    tab(chrome, "customers")
    form = chrome.find_element(By.ID, "customer-search")
    Select(form.find_element(By.NAME, "kind")).select_by_value("email")
    field = form.find_element(By.NAME, "value")
    field.clear()
    field.send_keys(person.email)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    found = wait(chrome).until(
        expected_conditions.visibility_of_element_located(
            (By.CSS_SELECTOR, f'#customer-results tr[data-customer="{person.customer_id}"]')
        )
    )
    found.find_element(By.CSS_SELECTOR, "button").click()
    wait(chrome).until(
        expected_conditions.text_to_be_present_in_element((By.ID, "customer-id"), person.customer_id)
    )
    wait(chrome).until(
        expected_conditions.text_to_be_present_in_element((By.ID, "customer-masked"), "masked")
    )


def page_text(chrome: webdriver.Chrome) -> str:
    """Everything the page holds: its visible text and its markup (hidden parts too)."""
    return chrome.find_element(By.TAG_NAME, "body").text + "\n" + chrome.page_source


def call_api(chrome: webdriver.Chrome, path: str) -> tuple[int, str]:
    """The route called by the page's own JS with the signed-in operator's token: what a hidden
    button would have done."""
    answer = chrome.execute_async_script(
        """
        const [path, done] = arguments;
        const token = sessionStorage.getItem("cems_console_token");
        fetch(path, {headers: {authorization: "Bearer " + token}})
          .then(async (r) => done([r.status, await r.text()]))
          .catch((e) => done([0, String(e)]));
        """,
        path,
    )
    return int(answer[0]), str(answer[1])


def post_api(chrome: webdriver.Chrome, path: str, body: dict[str, Any]) -> tuple[int, str]:
    """A POST by the page's own JS with the signed-in operator's token (see `call_api`)."""
    answer = chrome.execute_async_script(
        """
        const [path, body, done] = arguments;
        const token = sessionStorage.getItem("cems_console_token");
        fetch(path, {method: "POST", body: JSON.stringify(body),
                     headers: {authorization: "Bearer " + token, "content-type": "application/json"}})
          .then(async (r) => done([r.status, await r.text()]))
          .catch((e) => done([0, String(e)]));
        """,
        path,
        body,
    )
    return int(answer[0]), str(answer[1])


def screenshot(chrome: webdriver.Chrome, name: str) -> None:
    chrome.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def assert_report_shown(chrome: webdriver.Chrome) -> None:
    """The report's steps table shows what the report JSON holds, and "not measured" where it has
    null, never 0."""
    wait(chrome).until(
        expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, "#report-steps tbody tr"))
    )
    status, text = call_api(chrome, f"/admin/console/scenarios/{SCENARIO_ID}/report")
    assert status == 200, text
    report = json.loads(text)
    rows = chrome.find_elements(By.CSS_SELECTOR, "#report-steps tbody tr")
    assert len(rows) == len(report["steps"]) > 0
    for step, tr in zip(report["steps"], rows, strict=True):
        cells = [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        for value, shown_as in zip(
            [step.get(m) for m in ("sent", "delivered", "opened", "clicked", "converted")],
            cells[3:],
            strict=True,
        ):
            assert shown_as == (NOT_MEASURED if value is None else f"{value:,}"), (step, cells)
    groups = chrome.find_element(By.ID, "report-groups").text
    assert "施策群 / Treatment" in groups and "ホールドアウト / Holdout" in groups
    assert "リフト / Lift" in chrome.find_element(By.ID, "report-lift").text


def assert_charts_shown(chrome: webdriver.Chrome) -> None:
    """The report's charts, drawn by the server (the HTML report's own SVG) and put in as live SVG:
    treatment vs holdout with the lift, a funnel per step row, LINE's funnel with delivered and opened
    as "not measured" (words, not a bar of 0), and the per-day bars; each fits the page's width."""
    lift = wait(chrome).until(
        expected_conditions.visibility_of_element_located(
            (By.CSS_SELECTOR, '#chart-lift figure[data-chart="lift"] svg')
        )
    )
    assert lift.find_elements(By.CSS_SELECTOR, "rect.bar")
    status, text = call_api(chrome, f"/admin/console/scenarios/{SCENARIO_ID}/report")
    assert status == 200, text
    report = json.loads(text)
    steps = chrome.find_elements(By.CSS_SELECTOR, '#chart-steps figure[data-chart="step"] svg')
    assert len(steps) == len(report["steps"]) > 0
    line = chrome.find_element(By.CSS_SELECTOR, '#chart-channels figure[data-channel="line"]')
    words = [t.text for t in line.find_elements(By.CSS_SELECTOR, "svg text.not-measured")]
    assert words == [NOT_MEASURED] * 2, words
    titles = [
        t.get_attribute("textContent") or "" for t in line.find_elements(By.CSS_SELECTOR, "rect.bar title")
    ]
    assert titles and not any(t.startswith(("到達 Delivered", "開封 Opened")) for t in titles), titles
    assert "IMP" in line.text and "LINE reports no per-recipient delivery" in line.text
    # The welcome went out today: a bar for it in the per-day chart, and a row in the table under it.
    days = chrome.find_element(By.CSS_SELECTOR, '#chart-days figure[data-chart="days"] svg')
    assert days.find_elements(By.CSS_SELECTOR, "rect.bar")
    assert chrome.find_elements(By.CSS_SELECTOR, "#report-day-table tbody tr")
    # Live SVG in the page (not an image or HTML), scaled to fit the report on a laptop screen.
    fits = chrome.execute_script(
        """
        const right = document.getElementById("report").getBoundingClientRect().right;
        const charts = [...document.querySelectorAll("#report figure.chart-card svg")];
        return charts.length > 0 && charts.every((svg) => svg.namespaceURI === "http://www.w3.org/2000/svg"
          && svg.getBoundingClientRect().right <= right + 1);
        """
    )
    assert fits is True


def assert_version_chosen(chrome: webdriver.Chrome) -> None:
    """The version shown: every version added together at first, then the one chosen, whose report
    and diagram (with that version's counts) replace them."""
    shown_form = expected_conditions.visibility_of_element_located((By.ID, "shown-version-form"))
    form = wait(chrome).until(shown_form)
    select = Select(form.find_element(By.NAME, "version"))
    assert select.first_selected_option.get_attribute("value") == ""
    assert "all versions" in chrome.find_element(By.ID, "report-summary").text
    select.select_by_value("1")
    wait(chrome).until(expected_conditions.text_to_be_present_in_element((By.ID, "report-summary"), "v1・"))
    assert chrome.find_elements(By.CSS_SELECTOR, f'#diagram svg[data-scenario="{SCENARIO_ID}"] g.box')


def assert_versions_compared(chrome: webdriver.Chrome) -> None:
    """The versions list (the newest active) and two diagrams side by side, each its version's."""
    wait(chrome).until(
        lambda c: len(c.find_elements(By.CSS_SELECTOR, "#version-table tbody tr[data-version]")) >= 2
    )
    newest = chrome.find_elements(By.CSS_SELECTOR, "#version-table tbody tr")[-1]
    assert "第2版" in newest.text and "配信中 / active" in newest.text, newest.text
    form = chrome.find_element(By.ID, "compare-form")
    left = Select(form.find_element(By.NAME, "left")).first_selected_option.get_attribute("value")
    right = Select(form.find_element(By.NAME, "right")).first_selected_option.get_attribute("value")
    assert left != right
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    for side, version in (("left", left), ("right", right)):
        svg = wait(chrome).until(
            expected_conditions.visibility_of_element_located(
                (
                    By.CSS_SELECTOR,
                    f'#compare-{side} svg[data-scenario="{SCENARIO_ID}"][data-version="{version}"]',
                )
            )
        )
        assert svg.find_elements(By.CSS_SELECTOR, "g.box")
        # Its own marker ids, so the page has each id once.
        ids = [m.get_attribute("id") or "" for m in svg.find_elements(By.TAG_NAME, "marker")]
        assert ids and all(i.startswith(f"{side}-") for i in ids), ids
    assert len(chrome.find_elements(By.CSS_SELECTOR, "#compare svg")) == 2


def assert_upload_report_shown(chrome: webdriver.Chrome) -> None:
    wait(chrome).until(
        expected_conditions.text_to_be_present_in_element((By.ID, "upload-summary"), "有効 / valid")
    )
    assert shown(chrome, "upload-report") and not shown(chrome, "upload-none")
    status, text = call_api(chrome, f"/admin/console/scenarios/{SCENARIO_ID}/upload-report")
    assert status == 200 and json.loads(text)["valid"] is True, text


def audit_entries(stack: LocalStackClient, actor: str) -> list[dict[str, Any]]:
    """The actor's entries in the audit table, read as the console does: a Query of each day's
    partition (today's and yesterday's, UTC, by CEMS's clock on the stack), never a Scan."""
    today = stack.now().date()
    items: list[dict[str, Any]] = []
    for day in (today, today - timedelta(days=1)):
        answer = stack.dynamodb.query(
            TableName="AuditTable",
            KeyConditionExpression="pk = :day",
            ExpressionAttributeValues={":day": {"S": f"AUDIT#{day.isoformat()}"}},
            ConsistentRead=True,
        )
        items += [i for i in answer["Items"] if i["actor"]["S"] == actor]
    return items


# -- the roles -------------------------------------------------------------------------------------------


def test_analyst_sees_customers_masked_and_the_server_refuses_unmasking(
    world: World, chrome: webdriver.Chrome
) -> None:
    sign_in(chrome, world, "analyst")
    assert visible_tabs(chrome) == ["home", "scenarios", "customers"]
    open_scenario(chrome)
    assert_report_shown(chrome)
    assert_charts_shown(chrome)
    chrome.execute_script('document.getElementById("chart-lift").scrollIntoView()')
    screenshot(chrome, "analyst_report_charts")
    chrome.execute_script('document.getElementById("report-channels").scrollIntoView()')
    screenshot(chrome, "analyst_report_channels_days")

    # The audience of the uploaded scenario's document: read from the file, counted by the API.
    assert shown(chrome, "audience")
    form = chrome.find_element(By.ID, "audience-form")
    form.find_element(By.NAME, "file").send_keys(str(world.scenario))
    document = form.find_element(By.NAME, "document")
    wait(chrome).until(lambda _: SCENARIO_ID in (document.get_attribute("value") or ""))
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    matching = wait(chrome).until(
        expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, "#audience-matching td"))
    )
    assert int(matching.text.replace(",", "")) >= 0
    assert chrome.find_elements(By.CSS_SELECTOR, "#audience-channels tbody tr")
    chrome.execute_script('document.getElementById("audience-result").scrollIntoView()')
    screenshot(chrome, "analyst_audience")
    # An invalid document: the problems at their paths, no counts.
    document.clear()
    document.send_keys('{"id": "x"}')
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(chrome).until(expected_conditions.visibility_of_element_located((By.ID, "audience-problems")))
    assert not shown(chrome, "audience-result")
    problems = chrome.find_elements(By.CSS_SELECTOR, "#audience-problems tbody tr")
    paths = [r.find_element(By.TAG_NAME, "td").text for r in problems]
    assert {"name", "trigger", "steps"} <= set(paths), paths

    find_customer(chrome, world.person)
    for button in ("unmask", "export", "erase"):
        assert not shown(chrome, button), button
    text = page_text(chrome)
    for personal in world.person.personal:
        assert personal not in text, personal
    # The masked email keeps its domain, so the operator can tell customers apart.
    assert "example.jp" in chrome.find_element(By.ID, "customer-results").text
    screenshot(chrome, "analyst")

    # What the page hides, the server refuses: 403 with the reason and nothing of the customer.
    status, answer = call_api(chrome, f"/admin/console/customers/{world.person.customer_id}?unmasked=true")
    assert status == 403, answer
    assert json.loads(answer)["error"] == "forbidden"
    for personal in (*world.person.personal, world.person.customer_id):
        assert personal not in answer
    status, answer = call_api(chrome, f"/admin/console/customers/{world.person.customer_id}/export")
    assert status == 403 and world.person.email not in answer
    status, answer = call_api(chrome, "/admin/console/audit")
    assert status == 403 and "entries" not in answer
    # No preview or test send for the analyst: no form, and 403 from the server.
    assert not shown(chrome, "test-send")
    for route, body in (
        ("preview", {"step": "welcome"}),
        ("test-send", {"step": "welcome", "to": STAFF_LINE}),
    ):
        status, answer = post_api(chrome, f"/admin/console/scenarios/{SCENARIO_ID}/{route}", body)
        assert status == 403 and json.loads(answer)["field"] == "test_send", answer
        assert "茶寮" not in answer and "queued" not in answer


def test_content_writer_sees_scenarios_but_no_customers(world: World, chrome: webdriver.Chrome) -> None:
    sign_in(chrome, world, "content_writer")
    assert visible_tabs(chrome) == ["home", "scenarios"]
    open_scenario(chrome)
    # No reports_view: the diagram without counts, and no report.
    assert not shown(chrome, "report")
    assert not chrome.find_elements(By.CSS_SELECTOR, "#diagram svg .legend")
    assert not shown(chrome, "audience")
    screenshot(chrome, "content_writer")

    status, answer = call_api(chrome, f"/admin/console/customers?email={world.person.email}")
    assert status == 403, answer
    assert json.loads(answer)["error"] == "forbidden" and world.person.customer_id not in answer
    status, answer = call_api(chrome, f"/admin/console/scenarios/{SCENARIO_ID}/report")
    assert status == 403 and "steps" not in answer and "<svg" not in answer
    assert not chrome.find_elements(By.CSS_SELECTOR, "#report figure.chart-card svg")


def test_content_writer_previews_a_send_step_and_test_sends_it_to_a_staff_account(
    world: World, chrome: webdriver.Chrome
) -> None:
    writer = world.operators["content_writer"]
    sign_in(chrome, world, "content_writer")
    open_scenario(chrome)
    assert shown(chrome, "test-send")
    form = chrome.find_element(By.ID, "test-send-form")
    steps = Select(form.find_element(By.NAME, "step"))
    wait(chrome).until(lambda _: len(steps.options) > 0)
    # The active version's send steps only (welcome and the coupon; no wait, branch or menu step).
    assert [o.get_attribute("value") for o in steps.options] == ["welcome", "first-coupon"]
    steps.select_by_value("welcome")
    chrome.find_element(By.ID, "preview-button").click()
    card = wait(chrome).until(
        expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, '#preview [data-channel="line"]'))
    )
    assert WELCOME in card.text and "Message 1" in card.text
    assert "サンプル" in chrome.find_element(By.ID, "preview").text  # rendered with the sample profile
    # As text: the message is a <pre>'s text, no markup was made from it.
    assert card.find_elements(By.CSS_SELECTOR, '[data-part="line-message"] pre')
    chrome.execute_script('document.getElementById("test-send").scrollIntoView()')
    screenshot(chrome, "content_writer_preview")

    # A recipient that is no LINE user id: the API's message, the field marked, nothing queued.
    recipient = form.find_element(By.NAME, "to")
    recipient.send_keys("line:U123")
    chrome.find_element(By.ID, "test-send-button").click()
    wait(chrome).until(expected_conditions.text_to_be_present_in_element((By.ID, "error"), "LINE user id"))
    assert recipient.get_attribute("aria-invalid") == "true"

    recipient.clear()
    recipient.send_keys(STAFF_LINE)
    chrome.find_element(By.ID, "test-send-button").click()
    wait(chrome).until(
        expected_conditions.text_to_be_present_in_element((By.ID, "test-send-result"), "LineSendQueue")
    )
    result = chrome.find_element(By.ID, "test-send-result").text
    assert "test send queued on LineSendQueue" in result and "レポートに数えられません" in result
    assert f"test#{SCENARIO_ID}#welcome#" in result and STAFF_LINE_ID not in result
    chrome.execute_script('document.getElementById("test-send").scrollIntoView()')
    screenshot(chrome, "content_writer_test_send")

    # send_line pushes it to the staff account alone (the fake LINE API received it).
    def received() -> list[dict[str, Any]]:
        world.stack.drain()
        return [m for m in world.stack.line_messages() if m.get("to") == STAFF_LINE_ID]

    (pushed,) = eventually(received, "the test send on the fake LINE API")
    assert WELCOME in json.dumps(pushed, ensure_ascii=False)
    # One test_send entry per attempt (the malformed recipient's attempt failed, the other was allowed),
    # naming the scenario, step and channel and never the staff account.
    entries = [e for e in audit_entries(world.stack, writer) if e["action"]["S"] == "test_send"]
    assert sorted(e["outcome"]["S"] for e in entries) == ["allowed", "failed"]
    assert all(e["target"]["S"] == SCENARIO_ID for e in entries)
    assert STAFF_LINE_ID not in json.dumps(entries)


def test_scenario_designer_sees_the_diagram_and_the_report(world: World, chrome: webdriver.Chrome) -> None:
    sign_in(chrome, world, "scenario_designer")
    assert visible_tabs(chrome) == ["home", "scenarios", "customers"]
    open_scenario(chrome)
    # Drawn as live SVG: the step boxes and, for a role that sees results, the counts' legend (the
    # drawing comes first, then the report's answer brings it again with its counts).
    svg = (
        wait(chrome)
        .until(expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, "#diagram svg .legend")))
        .find_element(By.XPATH, "./ancestor::*[local-name()='svg'][1]")
    )
    assert svg.find_elements(By.CSS_SELECTOR, "g.box")
    assert_report_shown(chrome)
    assert_upload_report_shown(chrome)
    assert_versions_compared(chrome)
    assert_version_chosen(chrome)
    screenshot(chrome, "scenario_designer")
    chrome.execute_script('document.getElementById("compare").scrollIntoView()')
    screenshot(chrome, "scenario_designer_compare")

    find_customer(chrome, world.person)
    for button in ("unmask", "export", "erase"):
        assert not shown(chrome, button), button
    assert world.person.email not in page_text(chrome)


def test_admin_unmasks_exports_and_erases(world: World, chrome: webdriver.Chrome, tmp_path: Path) -> None:
    sign_in(chrome, world, "admin")
    assert visible_tabs(chrome) == ["home", "scenarios", "customers", "audit"]
    open_scenario(chrome)
    assert_report_shown(chrome)

    find_customer(chrome, world.person)
    assert world.person.email not in chrome.find_element(By.TAG_NAME, "body").text  # masked until asked
    chrome.find_element(By.ID, "unmask").click()
    wait(chrome).until(
        expected_conditions.text_to_be_present_in_element((By.ID, "customer-masked"), "unmasked")
    )
    profile = chrome.find_element(By.ID, "customer-profile").text
    assert world.person.email in profile and world.person.last_name in profile
    screenshot(chrome, "admin")

    chrome.find_element(By.ID, "export").click()
    wait(chrome).until(expected_conditions.text_to_be_present_in_element((By.ID, "notice"), "exported"))
    download = tmp_path / f"customer-{world.person.customer_id}.json"
    eventually(download.is_file, "the exported file")
    exported = json.loads(download.read_text(encoding="utf-8"))
    assert exported["customer_id"] == world.person.customer_id
    assert exported["profiles"][0]["traits"]["email"] == world.person.email

    find_customer(chrome, world.erasable)
    chrome.find_element(By.ID, "erase").click()
    alert = wait(chrome).until(expected_conditions.alert_is_present())
    assert "元に戻せません" in alert.text
    alert.accept()
    wait(chrome).until(expected_conditions.text_to_be_present_in_element((By.ID, "notice"), "erased"))
    assert not shown(chrome, "customer-view")
    # Searched again: gone.
    form = chrome.find_element(By.ID, "customer-search")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(chrome).until(expected_conditions.visibility_of_element_located((By.ID, "customer-none")))

    # The audit log has what the admin just did, newest first.
    tab(chrome, "audit")
    wait(chrome).until(
        expected_conditions.visibility_of_element_located(
            (By.CSS_SELECTOR, '#audit-table tr[data-action="customer_erase"]')
        )
    )
    log = chrome.find_element(By.ID, "audit-table").text
    assert world.operators["admin"] in log and "customer_unmask" in log and "customer_export" in log

    chrome.find_element(By.ID, "sign-out").click()
    wait(chrome).until(expected_conditions.visibility_of_element_located((By.ID, "sign-in")))
    assert chrome.execute_script('return sessionStorage.getItem("cems_console_token")') is None
    assert world.person.email not in page_text(chrome)


def test_a_wrong_password_shows_the_error_and_is_in_the_audit_log(
    world: World, chrome: webdriver.Chrome
) -> None:
    analyst = world.operators["analyst"]
    open_console(chrome, world.stack)
    submit_sign_in(chrome, analyst, "Wrong-Password-0")
    wait(chrome).until(
        expected_conditions.text_to_be_present_in_element(
            (By.ID, "sign-in-error"), "wrong user name or password"
        )
    )
    assert not shown(chrome, "console")
    assert chrome.execute_script('return sessionStorage.getItem("cems_console_token")') is None
    screenshot(chrome, "sign_in_failed")

    failed = eventually(
        lambda: [e for e in audit_entries(world.stack, analyst) if e["action"]["S"] == "sign_in_failed"],
        "the sign_in_failed entry",
    )
    assert failed[0]["outcome"]["S"] == "refused"

    # And the admin reads it in the console's audit tab.
    sign_in(chrome, world, "admin")
    tab(chrome, "audit")
    rows = wait(chrome).until(
        expected_conditions.visibility_of_all_elements_located(
            (By.CSS_SELECTOR, '#audit-table tr[data-action="sign_in_failed"]')
        )
    )
    assert any(analyst in row.text and "拒否 / refused" in row.text for row in rows)
