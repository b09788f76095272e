"""What CEMS replies on LINE to webhook events: Japanese first, English alongside.

Limits that shape the texts (LINE Messaging API): a buttons template's text is at most 160
characters without a title, an action label at most 20, alt text at most 400.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Reply(StrEnum):
    """The replies the webhook sends, each to a newly stored event only (never to a redelivery)."""

    WELCOME = "welcome"  # a new friend: thanks, and the link button
    WELCOME_BACK = "welcome_back"  # a friend again, already linked
    LINK = "link"  # asked for the link button ("連携" / "link")
    ALREADY_LINKED = "already_linked"
    LINKED = "linked"  # accountLink with a valid nonce
    LINK_FAILED = "link_failed"  # accountLink whose nonce was unknown, used or expired: a new button
    SURVEY_THANKS = "survey_thanks"


WELCOME_TEXT = "友だち追加ありがとうございます！\nThank you for adding us as a friend!"
WELCOME_BACK_TEXT = "おかえりなさい！またよろしくお願いします。\nWelcome back, and thank you!"
LINK_BUTTON_TEXT = (
    "ショップのアカウントと連携すると、あなたに合ったお知らせをお届けします。\n"
    "Link your shop account to get news that suits you."
)
LINK_BUTTON_LABEL = "連携する / Link"
LINK_ALT_TEXT = "アカウント連携のご案内 / Link your shop account"
ALREADY_LINKED_TEXT = "アカウントはすでに連携済みです。\nYour account is already linked."
LINKED_TEXT = "アカウント連携が完了しました。ありがとうございます！\nYour account is now linked. Thank you!"
LINK_FAILED_TEXT = (
    "連携できませんでした。リンクの有効期限が切れたか、すでに使われています。下のボタンからもう一度お試しください。\n"
    "Linking did not work: the link expired or was already used. Please try again below."
)
LINK_UNAVAILABLE_TEXT = (
    "ただいま連携の準備ができません。しばらくしてからもう一度お試しください。\n"
    "Linking is not available right now. Please try again later."
)
SURVEY_THANKS_TEXT = "ご回答ありがとうございます！\nThank you for your answer!"
# What a friend can type to get the link button.
LINK_KEYWORDS = frozenset({"連携", "アカウント連携", "link", "link account"})


def link_button(link_page_url: str) -> Any:
    """A buttons template opening the shop's link page (which carries the link token)."""
    # line-bot-sdk ships no type information.
    from linebot.v3.messaging import (  # type: ignore[import-untyped,unused-ignore]
        ButtonsTemplate,
        TemplateMessage,
        URIAction,
    )

    return TemplateMessage(
        alt_text=LINK_ALT_TEXT,
        template=ButtonsTemplate(
            text=LINK_BUTTON_TEXT, actions=[URIAction(label=LINK_BUTTON_LABEL, uri=link_page_url)]
        ),
    )


def messages_for(reply: Reply, link_page_url: str | None) -> list[Any]:
    """The messages of a reply; replies that offer linking carry the button when a link page URL
    could be made (issuing the link token may fail: the text still goes)."""
    # The SDK's models on the first reply, not at the webhook's init: most events reply nothing.
    from linebot.v3.messaging import TextMessage  # type: ignore[import-untyped,unused-ignore]

    button = [link_button(link_page_url)] if link_page_url else []
    match reply:
        case Reply.WELCOME:
            return [TextMessage(text=WELCOME_TEXT), *button]
        case Reply.WELCOME_BACK:
            return [TextMessage(text=WELCOME_BACK_TEXT)]
        case Reply.LINK:
            return button or [TextMessage(text=LINK_UNAVAILABLE_TEXT)]
        case Reply.ALREADY_LINKED:
            return [TextMessage(text=ALREADY_LINKED_TEXT)]
        case Reply.LINKED:
            return [TextMessage(text=LINKED_TEXT)]
        case Reply.LINK_FAILED:
            return [TextMessage(text=LINK_FAILED_TEXT), *button]
        case Reply.SURVEY_THANKS:
            return [TextMessage(text=SURVEY_THANKS_TEXT)]


def offers_link(reply: Reply) -> bool:
    """Whether this reply carries a link button (so a link token must be issued first)."""
    return reply in (Reply.WELCOME, Reply.LINK, Reply.LINK_FAILED)
