"""The docs runner itself: it must catch a page whose answers drifted from the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from envoi.testing.docs import mismatches, parse_page, run_page
from tests.conftest import ApiProject, Backend

PAGE = """
```sh
curl -s -u "$LOGIN:$SECRET" -X POST "$ENVOI/api/v1/categories" \\
  -H 'Content-Type: application/json' -d '{"title": "News"}'
```

```http
HTTP/1.1 201 Created

{"category": 1, "project_id": 2, "title": "%s", "description": null%s}
```
"""


def _page(title: str) -> str:
    langs = ("ru", "en", "de", "fr", "it", "es", "tr", "pl", "zh", "ko")
    rest = "".join(f', "title_{x}": null, "description_{x}": null' for x in langs)
    return PAGE % (title, rest)


def test_ids_and_times_may_differ_but_values_may_not() -> None:
    assert mismatches({"id": 1, "created_at": "2020"}, {"id": 9, "created_at": "2026"}) == []
    assert mismatches({"id": 1}, {"id": "1"}) != []
    assert mismatches({"title": "a"}, {"title": "b"}) == ["$.title: 'a' != 'b'"]
    assert mismatches({"a": 1}, {"a": 1, "b": 2}) != []
    assert mismatches([{"a": 1}], []) != []
    assert mismatches({"note": "..."}, {"note": "anything"}) == []


def _env(backend: Backend, project: ApiProject) -> dict[str, str]:
    return {"ENVOI": backend.base_url, "LOGIN": project.creds.login, "SECRET": project.creds.secret}


def test_a_true_page_passes(backend: Backend, project: ApiProject, tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(_page("News"))
    assert len(parse_page(page.read_text())) == 1
    run_page(page, _env(backend, project), tmp_path)


def test_a_drifted_page_fails(backend: Backend, project: ApiProject, tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(_page("Old title"))
    with pytest.raises(AssertionError, match="title"):
        run_page(page, _env(backend, project), tmp_path)
    page.write_text(_page("News").replace("201 Created", "200 OK"))
    with pytest.raises(AssertionError, match="status 201, documented 200"):
        run_page(page, _env(backend, project), tmp_path)
