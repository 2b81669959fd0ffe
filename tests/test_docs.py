"""Every page of docs/ runs: its curl examples give the documented status and body."""

from __future__ import annotations

from pathlib import Path

import pytest

from envoi.testing.docs import parse_page, run_page
from tests.conftest import ApiProject, Backend

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(p for p in DOCS.glob("*.md") if parse_page(p.read_text()))


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_documented_examples_run(
    page: Path, backend: Backend, project: ApiProject, tmp_path: Path
) -> None:
    env = {"ENVOI": backend.base_url, "LOGIN": project.creds.login, "SECRET": project.creds.secret}
    run_page(page, env, tmp_path)


def test_every_api_page_has_examples() -> None:
    api_pages = list(DOCS.glob("api-*.md"))
    assert api_pages, "docs/ has no API page"
    assert set(api_pages) <= set(PAGES)
