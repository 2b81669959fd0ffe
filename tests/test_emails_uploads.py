"""`file_html*` uploads of `/api/v1/emails`: HTML files and zips with their images, the
rewriting of relative references and the public asset URLs recipients' clients fetch.
"""

from __future__ import annotations

import base64
import io
import zipfile
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import ApiProject

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
GIF = b"GIF89a" + bytes(range(64))
PUBLIC_URL = "http://envoi.test"


def data_url(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def new_category(project: ApiProject) -> int:
    category: int = project.client.post("/categories", json={"title": "News"}).json()["category"]
    return category


def create(project: ApiProject, **fields: Any) -> httpx.Response:
    body = {"category": new_category(project), "from_address": "news@example.com", **fields}
    return project.client.post("/emails", json=body)


def path_of(url: str) -> str:
    """The app answers with `public_url` (http://envoi.test); tests reach it on loopback."""
    assert url.startswith(PUBLIC_URL + "/assets/")
    return urlsplit(url).path


NEWSLETTER = """<html><head><style>
  body { background: url('./images/bg.gif') no-repeat; }
</style></head>
<body background="images/bg.gif">
  <img src="images/logo.png?v=2" alt="logo">
  <img src='images/My%20Photo.png'>
  <img src="https://cdn.example.com/images/logo.png">
  <img src="images/missing.png">
  <a href="{{ unsubscribe_url }}">Unsubscribe</a>
  <a href="#top">Top</a>
</body></html>"""


def newsletter_zip() -> bytes:
    return zip_of(
        {
            "newsletter/index.html": NEWSLETTER.encode(),
            "newsletter/images/logo.png": PNG,
            "newsletter/images/bg.gif": GIF,
            "newsletter/images/My Photo.png": PNG[::-1],
            "newsletter/.DS_Store": b"junk",
            "__MACOSX/newsletter/._index.html": b"junk",
        }
    )


def test_text_html_data_url_becomes_the_language_html(project: ApiProject) -> None:
    html = "<p>Hallo {{ name }}, schöne Grüße</p>"
    response = create(project, file_html_de=data_url("text/html", html.encode()))
    assert response.status_code == 201
    email = response.json()
    assert email["text_html_de"] == html
    assert email["text_html"] is None
    assert email["assets"] == []
    assert "file_html_de" not in email


@pytest.mark.parametrize(
    ("media_type", "payload"),
    [
        (
            "text/html",
            '<meta charset="windows-1251"><p>Привет</p>'.encode("cp1251"),
        ),
        (
            "text/html",
            b'<meta http-equiv="Content-Type" content="text/html; charset=koi8-r">'
            + "<p>Привет</p>".encode("koi8-r"),
        ),
        ("text/html;charset=windows-1251", "<p>Привет</p>".encode("cp1251")),
        ("text/html", b"\xef\xbb\xbf<p>\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82</p>"),
    ],
)
def test_legacy_charsets_are_decoded(project: ApiProject, media_type: str, payload: bytes) -> None:
    email = create(project, file_html_ru=data_url(media_type, payload)).json()
    assert "<p>Привет</p>" in email["text_html_ru"]


def test_undeclared_legacy_bytes_fall_back_to_cp1252(project: ApiProject) -> None:
    email = create(project, file_html=data_url("text/html", "<p>café à 5 €</p>".encode("cp1252")))
    assert email.json()["text_html"] == "<p>café à 5 €</p>"


@pytest.mark.parametrize("charset", ["hex", "rot13", "base64", "zlib", "idna", "x-unknown"])
def test_a_data_url_charset_that_is_no_text_encoding_is_422(
    project: ApiProject, charset: str
) -> None:
    # `hex`, `rot13`, `base64` ... are codecs to Python, but bytes-to-bytes ones.
    response = create(
        project, file_html_fr=data_url(f"text/html;charset={charset}", b"<p>\xe9</p>")
    )
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {
            "loc": ["body", "file_html_fr"],
            "msg": f"the data URL's charset '{charset}' is not a known text encoding",
            "type": "value_error",
        }
    ]
    assert project.client.get("/emails").json() == []


@pytest.mark.parametrize("charset", ["hex", "rot13", "base64", "undefined", "x-unknown"])
def test_a_meta_charset_that_is_no_text_encoding_is_ignored(
    project: ApiProject, charset: str
) -> None:
    # The file is the author's, not the client's: like a browser, fall back to cp1252.
    page = f'<meta charset="{charset}"><p>caf\xe9</p>'.encode("latin-1")
    response = create(project, file_html=data_url("text/html", page))
    assert response.status_code == 201, response.text
    assert response.json()["text_html"] == f'<meta charset="{charset}"><p>café</p>'


def test_zip_references_are_rewritten_and_assets_served(
    project: ApiProject, anonymous: httpx.Client
) -> None:
    response = create(project, file_html=data_url("application/zip", newsletter_zip()))
    assert response.status_code == 201, response.text
    email = response.json()
    assets = {asset["path"]: asset for asset in email["assets"]}
    assert sorted(assets) == [
        "newsletter/images/My Photo.png",
        "newsletter/images/bg.gif",
        "newsletter/images/logo.png",
    ]
    logo = assets["newsletter/images/logo.png"]
    assert logo["language"] == ""
    assert logo["content_type"] == "image/png"
    base = logo["url"].removesuffix("newsletter/images/logo.png")
    assert base.startswith(f"{PUBLIC_URL}/assets/")
    assert base.endswith("/default/")

    html = email["text_html"]
    assert f"url('{base}newsletter/images/bg.gif')" in html
    assert f'background="{base}newsletter/images/bg.gif"' in html
    assert f'src="{base}newsletter/images/logo.png?v=2"' in html
    assert f"src='{base}newsletter/images/My%20Photo.png'" in html
    # Absolute URLs, unknown files, template expressions and anchors are left alone.
    assert 'src="https://cdn.example.com/images/logo.png"' in html
    assert 'src="images/missing.png"' in html
    assert 'href="{{ unsubscribe_url }}"' in html
    assert 'href="#top"' in html

    for path, content, content_type in (
        ("newsletter/images/logo.png", PNG, "image/png"),
        ("newsletter/images/bg.gif", GIF, "image/gif"),
        ("newsletter/images/My Photo.png", PNG[::-1], "image/png"),
    ):
        served = anonymous.get(path_of(assets[path]["url"]))  # no credentials needed
        assert served.status_code == 200
        assert served.content == content
        assert served.headers["content-type"] == content_type
        assert "max-age=" in served.headers["cache-control"]
        assert served.headers["x-content-type-options"] == "nosniff"


def test_asset_urls_that_name_nothing_are_404(project: ApiProject, anonymous: httpx.Client) -> None:
    email = create(project, file_html_ru=data_url("application/zip", newsletter_zip())).json()
    url = path_of(email["assets"][0]["url"])
    assert "/ru/" in url
    assert anonymous.get(url).status_code == 200
    assert anonymous.get(url.replace("/ru/", "/default/")).status_code == 404
    assert anonymous.get(url.replace("/ru/", "/xx/")).status_code == 404
    assert anonymous.get(url + ".png").status_code == 404
    key = url.split("/")[2]
    assert anonymous.get(url.replace(key, "not-the-key")).status_code == 404


def test_case_mismatched_reference_still_finds_its_image(project: ApiProject) -> None:
    archive = zip_of({"index.htm": b'<img src="Images/Logo.PNG">', "images/logo.png": PNG})
    email = create(project, file_html_en=data_url("application/zip", archive)).json()
    assert email["text_html_en"] == f'<img src="{email["assets"][0]["url"]}">'
    assert email["assets"][0]["language"] == "en"


def test_reupload_replaces_a_languages_assets(project: ApiProject, anonymous: httpx.Client) -> None:
    email = create(project, file_html=data_url("application/zip", newsletter_zip())).json()
    old_urls = [path_of(asset["url"]) for asset in email["assets"]]
    archive = zip_of({"index.html": b'<img src="new.png">', "new.png": PNG})
    edited = project.client.patch(
        f"/emails/{email['id']}", json={"file_html": data_url("application/zip", archive)}
    ).json()
    assert [asset["path"] for asset in edited["assets"]] == ["new.png"]
    assert all(anonymous.get(url).status_code == 404 for url in old_urls)
    assert anonymous.get(path_of(edited["assets"][0]["url"])).content == PNG


def test_edits_keep_assets_while_the_html_remains(
    project: ApiProject, anonymous: httpx.Client
) -> None:
    email = create(project, file_html=data_url("application/zip", newsletter_zip())).json()
    url = path_of(email["assets"][0]["url"])
    edited = project.client.patch(f"/emails/{email['id']}", json={"subject": "Hi"}).json()
    assert edited["assets"] == email["assets"]

    # A client that GETs, edits the HTML and PUTs it back keeps its images.
    html = email["text_html"].replace("</body>", "<p>P.S.</p></body>")
    body = {"category": email["category"], "from_address": "news@example.com", "text_html": html}
    rewritten = project.client.put(f"/emails/{email['id']}", json=body).json()
    assert rewritten["assets"] == email["assets"]
    assert anonymous.get(url).status_code == 200

    # Without HTML the variant has nothing to show its images in.
    del body["text_html"]
    cleared = project.client.put(f"/emails/{email['id']}", json=body).json()
    assert cleared["assets"] == []
    assert anonymous.get(url).status_code == 404


def test_text_html_and_file_html_of_one_language_is_422(project: ApiProject) -> None:
    response = create(
        project, text_html_pl="<p>x</p>", file_html_pl=data_url("text/html", b"<p>y</p>")
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "file_html_pl"]
    both_languages = create(
        project, text_html_pl="<p>x</p>", file_html_tr=data_url("text/html", b"<p>y</p>")
    )
    assert both_languages.status_code == 201


def test_template_error_in_an_upload_names_the_upload(project: ApiProject) -> None:
    archive = zip_of({"index.html": b"<p>\n\n{{ name } }}</p>", "a.png": PNG})
    response = create(project, file_html_es=data_url("application/zip", archive))
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "file_html_es"]
    assert error["msg"].startswith("template syntax error at line 3")
    assert project.client.get("/emails").json() == []


def _many_files() -> bytes:
    return zip_of({"index.html": b"<p></p>"} | {f"img/{i}.png": PNG for i in range(500)})


def _bomb() -> bytes:
    return zip_of({"index.html": b"<p></p>", "big.png": bytes(21 * 1024 * 1024)})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (data_url("application/zip", zip_of({"a.png": PNG})), "the zip holds no .html file"),
        (
            data_url("application/zip", zip_of({"a.html": b"", "b/c.htm": b""})),
            "the zip holds 2 HTML files (a.html, b/c.htm); exactly one is allowed",
        ),
        (
            data_url("application/zip", zip_of({"i.html": b"", "../evil.png": PNG})),
            "the zip holds an unsafe path: '../evil.png'",
        ),
        (
            data_url("application/zip", zip_of({"i.html": b"", "/etc/cron.d/x": b""})),
            "the zip holds an unsafe path: '/etc/cron.d/x'",
        ),
        ("data:application/zip;base64,not*base64!", "data URL payload is not valid base64"),
        (data_url("image/png", PNG), "expected a data URL of text/html or application/zip"),
        ("https://example.com/newsletter.zip", "expected a data URL"),
        (data_url("application/zip", b"PK but not really"), "not a readable zip archive"),
        (data_url("application/zip", _many_files()), "at most 500 are allowed"),
        (data_url("application/zip", _bomb()), "more than 20 MB uncompressed"),
    ],
    ids=[
        "no-html",
        "two-html",
        "traversal",
        "absolute-path",
        "bad-base64",
        "wrong-type",
        "not-a-data-url",
        "not-a-zip",
        "too-many-files",
        "zip-bomb",
    ],
)
def test_bad_uploads_are_422(project: ApiProject, value: str, message: str) -> None:
    response = create(project, file_html_it=value)
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "file_html_it"]
    assert message in error["msg"]
    assert project.client.get("/emails").json() == []


def test_windows_zip_media_type_is_accepted(project: ApiProject) -> None:
    archive = zip_of({"mail.html": b"<p>hi</p>"})
    response = create(project, file_html=data_url("application/x-zip-compressed", archive))
    assert response.status_code == 201
    assert response.json()["text_html"] == "<p>hi</p>"
