"""Request and response bodies of the three campaign resources, field for field as in seed 002.

Per-field rules (types, ranges, URL and crontab syntax) live here; rules that need
several fields or the database (a U source needs a file, the email must exist) are
the services' and come back as the same 422 shape.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    PlainValidator,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from envoi.automation.schemas import TriggerIn
from envoi.automation.services import EVENT_SOURCE
from envoi.campaigns.spec import KEEP, CampaignSpec, FileChange, PostType, UploadedFile
from envoi.core.dataurl import DataURLError, parse_data_url
from envoi.db.lookup import DB_INT_MAX
from envoi.web.schemas import StrictModel

MAX_INT = DB_INT_MAX
_PLACEHOLDER = re.compile(r"\{\{.*?\}\}|\{[^{}]*\}")

DbId = Annotated[int, Field(ge=1, le=MAX_INT)]


def _as_utc(value: datetime) -> datetime:
    """ISO 8601 in, aware UTC out: a naive datetime is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]


def _hook_url(value: str) -> str:
    """An http(s) URL once its `{{ placeholders }}` / `{placeholders}` are filled in."""
    filled = _PLACEHOLDER.sub("x", value.strip())
    parts = urlsplit(filled)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL (placeholders allowed)")
    # Recipient data must never choose where the request goes (delivery refuses it too).
    if _PLACEHOLDER.search(urlsplit(value.strip()).netloc):
        raise ValueError("placeholders are allowed in the path and query, not in the host")
    if any(c.isspace() for c in filled):
        raise ValueError("must not contain spaces outside placeholders")
    return value.strip()


def _crontab(value: str) -> str:
    # strict: a day that never comes (30 February) is refused too.
    if not croniter.is_valid(value.strip(), strict=True):
        raise ValueError(f"{value!r} is not a valid crontab expression")
    return value.strip()


def _csv_file(value: Any) -> UploadedFile:
    if isinstance(value, UploadedFile):
        return value
    if isinstance(value, str):
        try:
            return UploadedFile.from_bytes(None, parse_data_url(value).data)
        except DataURLError as exc:
            raise ValueError(str(exc)) from None
    raise ValueError("expected a CSV file: a data URL string or a multipart/form-data part")


CsvFile = Annotated[
    UploadedFile,
    PlainValidator(_csv_file),
    WithJsonSchema(
        {
            "type": "string",
            "format": "data-url",
            "description": "A UTF-8 CSV as `data:text/csv;base64,...`, or a file part "
            "when the request is multipart/form-data.",
        }
    ),
]


class CampaignConfig(StrictModel):
    """Seed 002's `config` table; any other key is a 422. Intervals are in seconds."""

    not_check_subscription: bool = False
    not_check_sent_quarantine: bool = False
    retry_sent_quarantine_rejected: bool = False
    retry_sent_quarantine_rejected_interval: int | None = Field(None, ge=0, le=MAX_INT)
    min_send_interval: int | None = Field(None, ge=0, le=MAX_INT)
    hook_url_template: Annotated[str, AfterValidator(_hook_url)] | None = Field(
        None, max_length=2000
    )
    hook_use_auth: bool = False
    hook_pre_post: bool = False
    not_check_spam_quarantine: bool = False
    send_to_corp: bool = False
    send_by_uid: bool = False
    # envoi's own key (not the seed's): an automated campaign's runs mail everyone
    # again, not only the recipients no earlier run mailed (campaigns.scheduler).
    resend: bool = False


class _CampaignIn(StrictModel):
    """What the three tables share."""

    message_type: Literal["L"]
    message_id: DbId
    source_type: Literal["U", "S", "A"]
    source_id: DbId | None = None
    config: CampaignConfig = Field(default_factory=CampaignConfig)
    tags: str | None = Field(None, max_length=1000)
    priority: int = Field(0, ge=-MAX_INT, le=MAX_INT)
    start_immediately: bool = False

    @model_validator(mode="before")
    @classmethod
    def _messages_type_alias(cls, data: Any) -> Any:
        # The seed's A/B table spells it `messages_type`; accept it on every type.
        if isinstance(data, dict) and "messages_type" in data:
            data = dict(data)
            alias = data.pop("messages_type")
            if "message_type" in data and data["message_type"] != alias:
                raise ValueError("message_type and messages_type disagree; send one of them")
            data.setdefault("message_type", alias)
        return data

    @field_validator("config", mode="before")
    @classmethod
    def _config_as_json_text(cls, value: Any) -> Any:
        # Form fields are text, and the seed types config as "JSON": accept a JSON string.
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"config is not valid JSON: {exc.msg}") from None
        return {} if value is None else value


class RegularCampaignIn(_CampaignIn):
    """`/api/v1/campaigns`: a one-time mailing."""

    source_uploaded_csv: CsvFile | None = None
    additional_source_file: CsvFile | None = None
    planned_at: UtcDateTime | None = None
    send_during_hours: int | None = Field(None, ge=1, le=168)


class ABCampaignIn(RegularCampaignIn):
    """`/api/v1/ab-campaigns`: `message_id` is variant A, `ab_message_ids` the others.

    The seed's A/B table has no `ab_message_ids`, so a campaign made of its fields
    alone is accepted as a draft; `start` needs a second variant (a 409 without one).
    """

    ab_message_ids: list[DbId] = Field(default_factory=list, max_length=25)
    ab_percent: int = Field(10, ge=1, le=100)
    win_parameter: Literal["O", "C", "U"] = "O"
    test_planned_at: UtcDateTime | None = None
    main_planned_at: UtcDateTime | None = None

    @field_validator("ab_message_ids", mode="before")
    @classmethod
    def _ids_as_text(cls, value: Any) -> Any:
        # Form fields: "[2, 3]" or "2,3".
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError:
                    raise ValueError("ab_message_ids is not a JSON list") from None
            return [part.strip() for part in text.split(",") if part.strip()]
        return value


class AutomatedCampaignIn(_CampaignIn):
    """`/api/v1/automated-campaigns`: runs on its crontab, or on its trigger, while active.

    No uploaded lists: each run reads its segment or API source afresh. A triggered
    campaign has no source (`E`: the profile its event names; `automation.services`)."""

    # Widens the shared U/S/A: "E" (or left out) is a triggered campaign's, no source.
    source_type: Literal["S", "A", "E"] | None = None  # type: ignore[assignment]
    source_id: DbId | None = None
    active: bool = False
    crontab: Annotated[str, AfterValidator(_crontab)] | None = Field(None, max_length=200)
    run_from: UtcDateTime | None = None
    run_to: UtcDateTime | None = None
    trigger: TriggerIn | None = None

    @field_validator("trigger", mode="before")
    @classmethod
    def _trigger_as_json_text(cls, value: Any) -> Any:
        # A multipart form field is text: accept the trigger as JSON text, as config.
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"trigger is not valid JSON: {exc.msg}") from None
        return value


CampaignIn = RegularCampaignIn | ABCampaignIn | AutomatedCampaignIn


def _file_change(
    body: BaseModel, name: str, value: UploadedFile | None, rewrite: bool
) -> FileChange:
    if rewrite and name not in body.model_fields_set:
        return KEEP
    return value


def to_spec(body: CampaignIn, post_type: str, *, rewrite: bool = False) -> CampaignSpec:
    """The plain values the services work from."""
    common: dict[str, Any] = {
        "post_type": post_type,
        "message_type": body.message_type,
        "message_id": body.message_id,
        "source_type": body.source_type,
        "source_id": body.source_id,
        "config": body.config.model_dump(),
        "tags": body.tags,
        "priority": body.priority,
        "start_immediately": body.start_immediately,
    }
    if isinstance(body, AutomatedCampaignIn):
        return CampaignSpec(
            **common
            | {
                # `active: true` is the automated tables' way of saying start_immediately.
                "start_immediately": body.start_immediately or body.active,
                # Left out, it is the trigger's profile ("E"); without a trigger the
                # services then ask for one of S or A (`automation.services`).
                "source_type": body.source_type or EVENT_SOURCE,
                "trigger": body.trigger.stored() if body.trigger is not None else None,
                "crontab": body.crontab,
                "run_from": body.run_from,
                "run_to": body.run_to,
            }
        )
    common |= {
        "source_file": _file_change(body, "source_uploaded_csv", body.source_uploaded_csv, rewrite),
        "additional_file": _file_change(
            body, "additional_source_file", body.additional_source_file, rewrite
        ),
        "planned_at": body.planned_at,
        "send_during_hours": body.send_during_hours,
    }
    if isinstance(body, ABCampaignIn):
        common |= {
            "ab_message_ids": tuple(body.ab_message_ids),
            "ab_percent": body.ab_percent,
            "win_parameter": body.win_parameter,
            "test_planned_at": body.test_planned_at,
            "main_planned_at": body.main_planned_at,
        }
    return CampaignSpec(**common)


INPUT_MODELS: dict[str, type[CampaignIn]] = {
    PostType.REGULAR: RegularCampaignIn,
    PostType.AB: ABCampaignIn,
    PostType.AUTOMATED: AutomatedCampaignIn,
}


# --- responses ---------------------------------------------------------------------------


class FileOut(BaseModel):
    filename: str | None
    size: int


class AudienceOut(BaseModel):
    """`count`: recipients in the audience now; `last_build`: what the last build found."""

    count: int
    last_build: dict[str, Any] | None


class _CampaignOut(BaseModel):
    id: int
    project_id: int
    post: str
    post_type: str
    message_type: str
    message_id: int
    source_type: str
    source_id: int | None
    config: dict[str, Any]
    tags: str | None
    priority: int
    start_immediately: bool
    state: str
    spooler_token: str
    audience: AudienceOut
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None


class RegularCampaignOut(_CampaignOut):
    planned_at: datetime | None
    send_during_hours: int | None
    source_uploaded_csv: FileOut | None
    additional_source_file: FileOut | None


class ABVariantOut(BaseModel):
    """One variant of an A/B test: its email and message key, how many recipients the
    test drew for it, and (once decided; null before) its messages delivered, the
    recipients who opened and who clicked (people, each once) and its win rate."""

    email_id: int
    message: str
    sample: int
    delivered: int | None
    opened: int | None
    clicked: int | None
    rate: float | None
    winner: bool


class ABCampaignOut(RegularCampaignOut):
    ab_message_ids: list[int]
    ab_percent: int | None
    win_parameter: str | None
    test_planned_at: datetime | None
    main_planned_at: datetime | None
    # null until started, then `test` (the sample is sent), then `main` (the winner
    # goes to the rest): docs/campaigns-ab.md.
    ab_phase: str | None
    ab_main_at: datetime | None  # when the winner is (or was) decided
    ab_winner: int | None  # the winning email id, once decided
    ab_decided_at: datetime | None
    ab_variants: list[ABVariantOut] | None


class AutomatedCampaignOut(_CampaignOut):
    active: bool
    trigger: dict[str, Any] | None  # docs/campaigns-automated.md
    crontab: str | None
    run_from: datetime | None
    run_to: datetime | None


OUTPUT_MODELS: dict[str, type[_CampaignOut]] = {
    PostType.REGULAR: RegularCampaignOut,
    PostType.AB: ABCampaignOut,
    PostType.AUTOMATED: AutomatedCampaignOut,
}
