"""Liquid content: strict about missing values, all-or-nothing, LINE messages and email parts."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from cems.models import MessageType, OrderSummary, Profile, StoredEvent
from cems.templates import (
    RenderError,
    parse,
    render,
    render_email,
    render_line_messages,
    template_problems,
    template_scope,
)

NOW = datetime(2026, 5, 1, 1, 0, tzinfo=UTC)


def scope() -> dict[str, object]:
    profile = Profile(
        customer_id="cus_1",
        first_seen_at=NOW,
        updated_at=NOW,
        traits={"last_name": "佐藤", "survey.taste": "bitter", "nickname": None, "note": "<b>VIP</b>"},
        orders={"o1": OrderSummary(at=NOW, amount=Decimal("3240"))},
    )
    order = StoredEvent(
        customer_id="cus_1",
        site_id="shop",
        type=MessageType.TRACK,
        message_id="m1",
        event="Order Completed",
        timestamp=NOW,
        received_at=NOW,
        properties={"products": [{"name": "八女玉露", "sku": "GYO-100"}]},
    )
    return template_scope(
        profile, order, {"id": "ask", "type": "send"}, {"id": "s1", "name": "テスト", "version": 1}
    )


def test_renders_profile_event_step_and_scenario() -> None:
    text = (
        "{{ profile.traits.last_name }}様 {{ event.properties.products[0].name }} "
        "{{ step.id }} {{ scenario.id }}"
    )
    assert render(text, scope()) == "佐藤様 八女玉露 ask s1"


def test_a_trait_with_a_dot_is_reached_with_brackets() -> None:
    assert render('{{ profile.traits["survey.taste"] }}', scope()) == "bitter"


def test_a_missing_value_fails_naming_it() -> None:
    with pytest.raises(RenderError) as caught:
        render("{{ profile.traits.first_name }}様", scope())
    assert "profile.traits.first_name" in str(caught.value) and "default" in str(caught.value)


def test_a_null_trait_counts_as_missing() -> None:
    with pytest.raises(RenderError, match=r"profile\.traits\.nickname"):
        render("{{ profile.traits.nickname }}", scope())


def test_default_supplies_a_missing_value() -> None:
    assert render("{{ profile.traits.first_name | default: 'お客' }}様", scope()) == "お客様"


def test_if_may_test_a_missing_value() -> None:
    assert render("{% if profile.traits.vip %}VIP{% else %}一般{% endif %}", scope()) == "一般"


def test_amounts_are_numbers_and_dates_are_tokyo_time() -> None:
    assert render("{{ profile.monetary_total | times: 2 }}", scope()) == "6480"
    assert render("{{ profile.last_purchase_at | date: '%m月%d日 %H時' }}", scope()) == "05月01日 10時"


def test_plain_text_is_returned_as_is() -> None:
    assert render("こんにちは {name}", {}) == "こんにちは {name}"


def test_parsed_templates_are_cached() -> None:
    assert parse("{{ profile.customer_id }}") is parse("{{ profile.customer_id }}")


def test_template_problems_syntax_filter_and_scope() -> None:
    assert template_problems("{{ profile.customer_id }}") == []
    assert template_problems("{% if %}")[0].startswith("Liquid の構文エラー")
    assert template_problems("{{ x | nope }}") == [
        "Liquid のフィルター `nope` はありません / unknown Liquid filter `nope`",
        "`x` はテンプレートで使えません（使えるのは profile, event, step, scenario） / "
        "`x` is not in scope; templates can use profile, event, step, scenario",
    ]


def test_assigned_names_are_in_scope() -> None:
    assert template_problems("{% assign n = profile.traits.last_name %}{{ n }}") == []


def test_every_string_of_a_line_message_is_rendered() -> None:
    message = {
        "type": "template",
        "altText": "{{ profile.traits.last_name }}様へ",
        "template": {
            "type": "buttons",
            "text": "{{ event.properties.products[0].name }}はいかがでしたか",
            "actions": [{"type": "postback", "label": "苦い", "data": "survey=taste&answer=bitter"}],
        },
    }
    [rendered] = render_line_messages([message], scope())
    assert rendered["altText"] == "佐藤様へ"
    assert rendered["template"]["text"] == "八女玉露はいかがでしたか"


def test_a_line_message_with_a_missing_value_is_not_half_rendered() -> None:
    messages = [
        {"type": "text", "text": "{{ profile.traits.last_name }}様"},
        {"type": "text", "text": "{{ profile.traits.coupon }}"},
    ]
    with pytest.raises(RenderError) as caught:
        render_line_messages(messages, scope())
    assert [p.where for p in caught.value.problems] == ["[1].text"]


def test_a_rendered_text_over_the_line_limit_is_refused() -> None:
    with pytest.raises(RenderError, match="5000"):
        render_line_messages(
            [{"type": "text", "text": "{{ profile.traits.last_name }}" + "あ" * 4999}], scope()
        )


def test_email_parts_render_and_html_is_escaped() -> None:
    email = render_email(
        "{{ profile.traits.last_name }}様へ",
        "<p>{{ profile.traits.note }}</p>",
        "{{ profile.traits.note }}",
        scope(),
    )
    assert email.subject == "佐藤様へ"
    assert email.html == "<p>&lt;b&gt;VIP&lt;/b&gt;</p>"
    assert email.text == "<b>VIP</b>"


def test_email_with_a_missing_value_names_the_part() -> None:
    with pytest.raises(RenderError) as caught:
        render_email("件名", None, "{{ profile.traits.coupon }}", scope())
    assert [p.where for p in caught.value.problems] == ["text"]


def test_a_subject_may_not_render_a_line_break() -> None:
    with pytest.raises(RenderError, match="line break"):
        render_email("{{ event.properties.products[0].name }}\n", None, "x", scope())
