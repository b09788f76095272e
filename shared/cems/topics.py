"""Topics of the preference centre: the kinds of message a customer may leave one by one.

A deployment lists its topics (CEMS_TOPICS, `id:日本語/English,...`; DEFAULT_TOPICS when unset) and
each marketing scenario names one (`topic`). A customer who left a topic gets none of its scenarios'
sends, on any channel; "everything" stays what it was, the email channel's opt-out. Topics left are
on the profile (`Profile.topics`), written only from engage's signed unsubscribe page (the events
`Topic Left` / `Topic Joined`, folded by cems.profile_facts), never from a write key. See
docs/engagement.md ("Preference centre").
"""

# No `from __future__ import annotations`: pydantic would compile each annotation (see cems.settings).
import re
from datetime import datetime
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cems.settings import Settings, SettingsArea, variables

# Lower-case, short and URL-safe: a topic id goes into signed tokens, form values and report reasons.
TOPIC_ID_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
_TOPIC_ID = re.compile(TOPIC_ID_PATTERN)
TopicId = Annotated[str, Field(pattern=TOPIC_ID_PATTERN)]
# A preference page lists every topic: a list longer than this is no longer a choice a customer can
# read. It also bounds what a profile holds (only listed topics are ever written, cems.engagement).
MAX_TOPICS = 20
MAX_LABEL_LENGTH = 40
# Three topics most shops start from; an operator replaces them with CEMS_TOPICS.
DEFAULT_TOPICS = "news:お知らせ/News,restock:再入荷/Restock,campaigns:キャンペーン/Campaigns"


class Topic(BaseModel):
    """One topic: its id (what scenarios and tokens name) and its labels for the preference page."""

    model_config = ConfigDict(frozen=True)

    id: TopicId
    label_ja: Annotated[str, Field(min_length=1, max_length=MAX_LABEL_LENGTH)]
    label_en: Annotated[str, Field(min_length=1, max_length=MAX_LABEL_LENGTH)]

    @property
    def label(self) -> str:
        """`再入荷 / Restock`: both labels, as the page shows them."""
        return self.label_ja if self.label_ja == self.label_en else f"{self.label_ja} / {self.label_en}"


class TopicState(BaseModel):
    """A customer's choice about one topic, kept like a channel's state: the latest choice wins."""

    subscribed: bool
    updated_at: datetime
    # Who recorded it (`engage`: the customer on the preference page).
    source: str | None = None


def parse_topics(text: str) -> tuple[Topic, ...]:
    """`news:お知らせ/News,restock:再入荷/Restock`: comma-separated `id:日本語/English` (one label
    alone serves both languages). Raises ValueError naming the entry that is wrong."""
    topics: list[Topic] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        topic_id, found, labels = entry.partition(":")
        topic_id = topic_id.strip()
        if not found or not _TOPIC_ID.match(topic_id):
            raise ValueError(
                f'"{entry}" is not a topic: write "id:日本語/English" with an id of lower-case letters, '
                'digits, "-" or "_" (e.g. "restock:再入荷/Restock")'
            )
        ja, _, en = labels.partition("/")
        ja, en = ja.strip(), en.strip() or ja.strip()
        if not ja or len(ja) > MAX_LABEL_LENGTH or len(en) > MAX_LABEL_LENGTH:
            raise ValueError(f'topic "{topic_id}" needs labels of 1 to {MAX_LABEL_LENGTH} characters')
        if any(t.id == topic_id for t in topics):
            raise ValueError(f'topic "{topic_id}" is listed twice')
        topics.append(Topic(id=topic_id, label_ja=ja, label_en=en))
    if len(topics) > MAX_TOPICS:
        raise ValueError(f"at most {MAX_TOPICS} topics (a preference page lists them all)")
    return tuple(topics)


class TopicSettings(SettingsArea):
    """The deployment's topics (CEMS_TOPICS); `none` for no topics (scenarios then name none)."""

    model_config = variables(topics="CEMS_TOPICS")
    topics: str = DEFAULT_TOPICS

    @field_validator("topics")
    @classmethod
    def _parses(cls, value: str) -> str:
        # Checked by the one parser the functions use, so a bad value stops them at init naming CEMS_TOPICS.
        if value.strip().lower() != "none":
            parse_topics(value)
        return value

    def listed(self) -> tuple[Topic, ...]:
        return () if self.topics.strip().lower() == "none" else parse_topics(self.topics)

    @classmethod
    def from_environ(cls) -> Self:
        """The topics of the environment this process runs in (the CLI and the scenario loader)."""
        return Settings.from_environ().area(cls)


def deployment_topics() -> tuple[Topic, ...]:
    """The topics scenario files may name here (CEMS_TOPICS, or the defaults)."""
    return TopicSettings.from_environ().listed()


def left_topic(topics: dict[str, TopicState], topic: str | None) -> bool:
    """Whether the customer whose topic choices are `topics` left `topic` (None: a scenario without a
    topic, which only the channel's own opt-out stops)."""
    if topic is None:
        return False
    state = topics.get(topic)
    return state is not None and not state.subscribed
