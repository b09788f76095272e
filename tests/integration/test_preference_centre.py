"""The preference centre through the engage handler on moto: the unsubscribe page offers "only this
topic" and "everything", topics left or joined again are stored on the profile (DynamoDB), and a
mail client's one-click POST still stops all marketing email."""

from __future__ import annotations

from urllib.parse import urlencode

from cems import clock
from cems.engagement.tokens import TokenKind
from cems.models import Profile
from cems.topics import TopicState

from tests.integration import test_engage_handler as handler
from tests.integration.test_engage_handler import NOW, Engage, token

# The engage handler's fixtures on moto, shared with its own tests.
engage = handler.engage
customer = handler.customer


def _choice(action: str, topic: str) -> str:
    return urlencode({"action": action, "topic": topic})


def test_the_page_offers_only_this_topic_and_everything_and_changes_nothing(
    engage: Engage, customer: Profile
) -> None:
    page = engage.get(f"/u/{token(TokenKind.UNSUBSCRIBE, topic='restock')}", "text/html")
    assert page.status == 200
    assert "このトピック（再入荷）のみ配信停止" in page.text and "Only this topic (Restock)" in page.text
    assert "すべて配信停止" in page.text and "Everything" in page.text
    # Every topic is listed with its state.
    for label in ("お知らせ", "再入荷", "キャンペーン"):
        assert label in page.text
    assert engage.profile().topics == {} and engage.events("Topic Left") == []


def test_leaving_only_this_topic_keeps_email_and_other_topics(engage: Engage, customer: Profile) -> None:
    link = f"/u/{token(TokenKind.UNSUBSCRIBE, topic='restock')}"
    answer = engage.post(link, "text/html", body=_choice("leave", "restock"))
    assert answer.status == 200 and "「再入荷」" in answer.text and "Restock" in answer.text
    profile = engage.profile()
    assert profile.topics == {"restock": TopicState(subscribed=False, updated_at=NOW, source="engage")}
    email = profile.channels["email"]
    assert email.consent is True  # only the topic was left
    [event] = engage.events("Topic Left")
    assert event.properties["topic"] == "restock" and event.site_id == "engage"

    # A replay changes nothing; the page now offers to subscribe again.
    clock.advance(60)
    again = engage.post(link, "application/json", body=_choice("leave", "restock"))
    assert again.json() == {"success": True, "result": "already"}
    assert len(engage.events("Topic Left")) == 1
    page = engage.get(link, "text/html")
    assert "このトピック（再入荷）のみ配信停止" not in page.text and "再開する" in page.text

    joined = engage.post(link, "application/json", body=_choice("join", "restock"))
    assert joined.json() == {"success": True, "result": "joined"}
    assert engage.profile().topics["restock"].subscribed is True


def test_everything_and_one_click_stop_email_as_before(engage: Engage, customer: Profile) -> None:
    link = f"/u/{token(TokenKind.UNSUBSCRIBE, topic='restock')}"
    # What a mail client's one-click button posts (RFC 8058): all marketing email stops.
    answer = engage.post(link, "text/html")
    assert answer.status == 200 and "配信を停止しました" in answer.text
    profile = engage.profile()
    assert profile.channels["email"].consent is False and profile.topics == {}


def test_the_pages_everything_button_stops_email(engage: Engage, customer: Profile) -> None:
    link = f"/u/{token(TokenKind.UNSUBSCRIBE, topic='news')}"
    answer = engage.post(link, "application/json", body="List-Unsubscribe=One-Click&action=all")
    assert answer.json() == {"success": True, "result": "unsubscribed"}
    assert engage.profile().channels["email"].consent is False


def test_an_old_token_without_a_topic_offers_everything(engage: Engage, customer: Profile) -> None:
    page = engage.get(f"/u/{token(TokenKind.UNSUBSCRIBE)}", "text/html")
    assert page.status == 200 and "このトピック" not in page.text and "すべて配信停止" in page.text


def test_a_forged_token_or_unknown_topic_changes_nothing(engage: Engage, customer: Profile) -> None:
    good = token(TokenKind.UNSUBSCRIBE, topic="restock")
    forged = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    answer = engage.post(f"/u/{forged}", "text/html", body=_choice("leave", "restock"))
    assert answer.status == 400 and "リンクが正しくありません" in answer.text
    unknown = engage.post(f"/u/{good}", "application/json", body=_choice("leave", "sumo"))
    assert unknown.status == 400 and unknown.json()["error"] == "unknown_topic"
    assert engage.profile().topics == {} and engage.profile().channels["email"].consent is True
    assert engage.events("Topic Left") == []


def test_a_body_that_is_no_topic_choice_is_the_one_click(engage: Engage, customer: Profile) -> None:
    link = f"/u/{token(TokenKind.UNSUBSCRIBE, topic='restock')}"
    answer = engage.post(link, "application/json", body="&".join(f"f{i}=x" for i in range(50)))
    assert answer.json() == {"success": True, "result": "unsubscribed"}
    assert engage.profile().topics == {}
