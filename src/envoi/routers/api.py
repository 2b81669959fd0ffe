"""HTTP API (filled in by the delivery issue)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
