"""Request and response bodies of `/api/v1/routers`, and each router kind's settings.

A router's `config` is checked by the model of its kind on every write, so a transport
built from a stored row never meets a setting it does not understand (and if one
does, say a `ca_file` removed since, `routers.services.make_transport` answers with a
transport that fails every message temporarily, saying why). The SMTP password is
stored (the relay needs it) but never shown: answers carry `"password_set": true`
instead.
"""

from __future__ import annotations

import ssl
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from envoi.core.errors import Invalid
from envoi.routers.network import is_loopback_host
from envoi.web.schemas import StrictModel

KINDS = ("smtp", "mx", "capture")


def _one_word(value: str) -> str:
    if any(c in value for c in "\r\n\0 "):
        raise ValueError("must be one word with no spaces or line breaks")
    return value


# A host name, EHLO name or login: it goes into an SMTP command line as it is.
OneWord = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_one_word)]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SmtpConfig(_Config):
    """A relay: every message goes to `host` (a smarthost, an ESP's SMTP endpoint)."""

    host: OneWord
    port: int | None = Field(default=None, ge=1, le=65535)
    tls: Literal["none", "starttls", "implicit"] = "starttls"
    # Check the relay's certificate (against `ca_file` when set, else the system CAs).
    verify_certs: bool = True
    ca_file: str | None = Field(default=None, max_length=1000)
    # AUTH over a session without TLS (refused otherwise, unless the relay is on loopback).
    allow_plaintext_auth: bool = False
    # Set by the operator only: the relay may have a private address (routers.network).
    allow_private_network: bool = False
    username: OneWord | None = None
    password: str | None = Field(default=None, max_length=1000)
    helo: OneWord | None = None
    # Seconds for the session setup and for each command's answer ...
    timeout: float = Field(default=60.0, gt=0, le=600)
    # ... and for the answer to the message itself (RFC 5321 asks for 10 minutes).
    data_timeout: float = Field(default=600.0, gt=0, le=3600)
    max_connections: int = Field(default=10, ge=1, le=1000)
    messages_per_connection: int = Field(default=1000, ge=1, le=1_000_000)
    messages_per_second: float = Field(default=0.0, ge=0)  # 0: no limit
    # Per destination (provider or domain) behind the relay; 0: no limit.
    domain_connections: int = Field(default=0, ge=0, le=1000)
    domain_messages_per_second: float = Field(default=0.0, ge=0)
    pause_seconds: float = Field(default=2.0, ge=0, le=3600)

    @field_validator("ca_file")
    @classmethod
    def _loadable(cls, value: str | None) -> str | None:
        # One answer for a missing, unreadable or wrong file: the API does not tell a
        # project which paths exist on the server.
        if value is not None:
            try:
                ssl.create_default_context(cafile=value)
            except (OSError, ValueError):  # ssl.SSLError is an OSError
                raise ValueError("cannot be loaded as a PEM file of CA certificates") from None
        return value

    @field_validator("username")
    @classmethod
    def _not_in_clear(cls, value: str | None, info: ValidationInfo) -> str | None:
        data = info.data
        if (
            value is not None
            and data.get("tls") == "none"
            and not data.get("allow_plaintext_auth")
            and not is_loopback_host(str(data.get("host", "")))
        ):
            raise ValueError(
                "with tls none the password would cross the network in clear: use tls "
                "starttls or implicit, or set allow_plaintext_auth"
            )
        return value

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return {"none": 25, "starttls": 587, "implicit": 465}[self.tls]


class MxConfig(_Config):
    """Direct delivery: each message goes to its recipient domain's MX hosts."""

    port: int = Field(default=25, ge=1, le=65535)
    # STARTTLS whenever the MX offers it (certificates are not checked, as between MTAs).
    tls: Literal["opportunistic", "none"] = "opportunistic"
    # Set by the operator only: MX hosts may have private addresses (routers.network).
    allow_private_network: bool = False
    helo: OneWord | None = None
    timeout: float = Field(default=60.0, gt=0, le=600)
    data_timeout: float = Field(default=600.0, gt=0, le=3600)
    domain_connections: int = Field(default=4, ge=1, le=100)
    domain_messages_per_second: float = Field(default=0.0, ge=0)
    messages_per_connection: int = Field(default=100, ge=1, le=100_000)
    pause_seconds: float = Field(default=2.0, ge=0, le=3600)


class CaptureConfig(_Config):
    """Keep mail in the OLTP store (GET /api/v1/captured); nothing to configure."""


CONFIG_MODELS: dict[str, type[_Config]] = {
    "smtp": SmtpConfig,
    "mx": MxConfig,
    "capture": CaptureConfig,
}


def parse_config(kind: str, config: dict[str, Any], loc: tuple[str | int, ...]) -> _Config:
    """The kind's model of `config`; Invalid naming the first bad field under `loc`."""
    model = CONFIG_MODELS.get(kind)
    if model is None:
        raise Invalid(f"kind must be one of {', '.join(KINDS)}", (*loc[:-1], "kind"))
    try:
        return model.model_validate(config)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise Invalid(first["msg"], (*loc, *first["loc"])) from None


def stored_config(parsed: _Config) -> dict[str, Any]:
    """What is kept in `Router.config`: the fields that differ from their defaults."""
    return parsed.model_dump(exclude_defaults=True)


def shown_config(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config as answered: everything but the password, and whether it is set."""
    shown = {key: value for key, value in config.items() if key != "password"}
    if "password" in config or "username" in config:
        shown["password_set"] = bool(config.get("password"))
    return shown


class RouterIn(StrictModel):
    name: str = Field(min_length=1, max_length=100)
    kind: Literal["smtp", "mx", "capture"]
    config: dict[str, Any] = Field(default_factory=dict)
    is_default: bool = False


class RouterOut(BaseModel):
    id: int
    name: str
    kind: str
    config: dict[str, Any]
    is_default: bool
    shared: bool
    created_at: datetime
    updated_at: datetime


class RuleIn(StrictModel):
    """Every condition that is set must match; none set matches every message."""

    router_id: int = Field(ge=-(2**63), le=2**63 - 1)
    position: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    campaign_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    message_type: str | None = Field(default=None, pattern=r"^[A-Z]$")
    domain: str | None = Field(default=None, min_length=1, max_length=255)
    provider: str | None = Field(default=None, min_length=1, max_length=64)


class RuleOut(BaseModel):
    id: int
    router_id: int = Field(ge=-(2**63), le=2**63 - 1)
    position: int
    campaign_id: int | None
    message_type: str | None
    domain: str | None
    provider: str | None
    created_at: datetime
