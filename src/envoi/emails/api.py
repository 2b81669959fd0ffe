"""`/api/v1/emails` and the public image URLs of uploaded zips."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/emails", tags=["emails"])
assets_router = APIRouter(tags=["assets"])
