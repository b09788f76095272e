"""What a scenario's send step says by email (its `email` field): the parts, each a Liquid template."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import BaseModel, Field, model_validator

from cems.scenario.problems import bilingual
from cems.scenario.values import StrictModel


class EmailContent(StrictModel, BaseModel):
    """An email's parts, each a Liquid template."""

    # StrictModel, with BaseModel named again so that linters see a pydantic model (as in
    # cems.scenario.model).

    doc_ja: ClassVar[str] = "メールの件名と本文。それぞれ Liquid テンプレートです。"

    subject: Annotated[str, Field(min_length=1, max_length=998)]
    html: str | None = None
    text: str | None = None

    @model_validator(mode="after")
    def _a_body(self) -> EmailContent:
        if not self.html and not self.text:
            raise ValueError(
                bilingual(
                    "メールには `html` か `text`（または両方）が必要です",
                    "an email needs `html`, `text` or both",
                )
            )
        return self
