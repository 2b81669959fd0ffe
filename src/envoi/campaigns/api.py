"""`/api/v1/campaigns`."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["campaigns"])
