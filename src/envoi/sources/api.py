"""`/api/v1/sources`."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["sources"])
