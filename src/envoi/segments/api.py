"""`/api/v1/segments`."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["segments"])
