"""The ten languages of seed 002's per-language fields."""

from __future__ import annotations

LANGUAGES: tuple[str, ...] = ("ru", "en", "de", "fr", "it", "es", "tr", "pl", "zh", "ko")

# Seed 002 spells Chinese `zn` in the categories table and `zh` in the emails table.
LANGUAGE_ALIASES: dict[str, str] = {"zn": "zh"}


def canonical_key(key: str) -> str:
    """Map `title_zn` to `title_zh`; any other key is returned unchanged."""
    head, sep, lang = key.rpartition("_")
    if sep and lang in LANGUAGE_ALIASES:
        return f"{head}_{LANGUAGE_ALIASES[lang]}"
    return key
