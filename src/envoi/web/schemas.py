"""Pydantic building blocks shared by the native API's schemas."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from envoi.core.languages import canonical_key


class StrictModel(BaseModel):
    """Request bodies refuse unknown keys, so a typo is a 422 instead of silently ignored."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _canonical_language_keys(cls, data: Any) -> Any:
        # Accept the seed's `title_zn` spelling wherever `title_zh` is meant.
        if isinstance(data, dict):
            return {canonical_key(k) if isinstance(k, str) else k: v for k, v in data.items()}
        return data
