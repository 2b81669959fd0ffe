"""`/api/v1/users` and `/api/v1/fields`."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/users", tags=["users"])
fields_router = APIRouter(prefix="/fields", tags=["fields"])
