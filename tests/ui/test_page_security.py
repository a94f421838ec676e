"""The page reads only bytes a client uploaded through it: attacks through its own HTTP API.

Before the fix, a ``FileData`` path in any event value (``{"path": "/etc/passwd", ...}``) was
copied into Gradio's cache (Gradio skips its upload check for mounted apps) and the rerank
event read ``.txt``/``.jsonl`` files named that way; ``gradio_api/file=`` then served the copy.
Both servers are attacked: ``finerank serve --ui`` (``create_app``) and ``finerank ui``
(``create_ui_app``).
"""

from __future__ import annotations

import json
import os
import stat
import time
import uuid
from pathlib import Path

import pytest

from tests.ui.conftest import UI_KEY
from tests.ui.page_api import PageClient, file_data

PASSWD = "/etc/passwd"


SERVERS = {
    "serve --ui": "ui_server",
    "finerank ui": "ui_alone_server",
    "serve --ui --api-key": "ui_keyed_server",
    "finerank ui --api-key": "ui_alone_keyed_server",
}


@pytest.fixture(params=list(SERVERS))
def server(request):
    return request.getfixturevalue(SERVERS[request.param])


@pytest.fixture
def client(server):
    """A client of the page; on a keyed server it sends the key."""
    keyed = bool(server[1].api_keys)
    page = PageClient(server[0], headers={"Authorization": f"Bearer {UI_KEY}"} if keyed else None)
    yield page
    page.close()


@pytest.fixture
def secret(tmp_path) -> tuple[Path, str]:
    """A server-side .txt file the page must never read, and its marker text."""
    marker = f"FINERANK-SECRET-{uuid.uuid4().hex}"
    path = tmp_path / "secret.txt"
    path.write_text(f"{marker}\nsecond line\n", encoding="utf-8")
    return path, marker


def _upload_dir(client: PageClient) -> Path:
    """The page's private upload directory (where a real upload lands)."""
    answer = client.upload("probe.txt", b"probe\n")
    assert answer.status_code == 200, answer.text
    return Path(answer.json()[0]).parent.parent


def _files_under(directory: Path) -> list[Path]:
    return [Path(root) / name for root, _, names in os.walk(directory) for name in names]


def _copies(directories: list[Path], marker: str, since: float) -> list[Path]:
    """Files written since ``since`` that hold ``marker`` or are named like the targets."""
    found = []
    for directory in directories:
        for path in _files_under(directory):
            try:
                if path.stat().st_mtime < since - 1:
                    continue
                if path.name in ("passwd", "secret.txt") or marker in path.read_text("latin-1"):
                    found.append(path)
            except OSError:
                continue
    return found


def test_named_server_files_are_never_read_or_copied(client, secret, tmp_path):
    import gradio.utils

    secret_path, marker = secret
    started = time.time()
    # A file another Gradio app on this host received sits in Gradio's shared cache.
    shared = Path(gradio.utils.get_upload_folder()) / uuid.uuid4().hex
    shared.mkdir(parents=True)
    shared_file = shared / "secret.txt"
    shared_file.write_text(f"{marker}\n", encoding="utf-8")
    private = _upload_dir(client)
    relative = os.path.relpath(secret_path, os.getcwd())
    assert relative.startswith("..")
    targets = [PASSWD, str(secret_path), relative, str(shared_file), "file:///etc/passwd"]
    try:
        for target in targets:
            reference = file_data(target, "secret.txt")
            attempts = {
                # the upload event with a path instead of an upload
                "upload": client.call("upload", [reference]),
                # the exploit: a file reference in the rerank event (any slot)
                "do_rerank": client.call("do_rerank", ["q", "", reference, 0, "truncate"]),
                "do_rerank (extra)": client.call(
                    "do_rerank", ["q", "", "", reference, 0, "truncate"]
                ),
                # a reference nested deeper than Gradio's own check looks
                "nested": client.call("do_rerank", [{"a": [reference]}, "", "x", 0, "truncate"]),
            }
            for route, answer in attempts.items():
                assert answer.join_status == 400, (target, route, answer)
                assert "upload the file through the page" in answer.join_body
                assert marker not in answer.text and "root:x:0:0" not in answer.text
            joined = client.join(client.fn_index("upload"), [reference])
            assert joined.status_code == 400, (target, joined.text)
        # Nothing was copied anywhere Gradio serves from, nor left in the private directory.
        copies = _copies([private, Path(gradio.utils.get_upload_folder())], marker, started)
        assert copies == [shared_file]
    finally:
        shared_file.unlink()
        shared.rmdir()


def test_gradio_file_routes_serve_nothing(client, secret):
    import gradio.utils

    secret_path, marker = secret
    private = _upload_dir(client)
    leftovers = [str(p) for p in _files_under(private)]
    shared = [str(p) for p in _files_under(Path(gradio.utils.get_upload_folder()))][:3]
    for target in [PASSWD, str(secret_path), *leftovers, *shared, "http://127.0.0.1:1/x"]:
        for route in ("file=", "file/", "proxy="):
            answer = client.http.get(f"{client.base}/gradio_api/{route}{target}")
            assert answer.status_code == 404, (route, target, answer.text)
            assert marker not in answer.text and "root:x:0:0" not in answer.text
    # Gradio routes the page does not use are not served at all.
    for route in ("gradio_api/monitoring/summary", "gradio_api/runs", "gradio_api/vibe-code"):
        assert client.http.get(f"{client.base}/{route}").status_code == 404, route


def test_an_upload_fills_the_box_once(client):
    texts = ["违反本法第二十七条规定的处罚", "网络运营者的义务\n第二款", "附则"]
    body = "\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in texts).encode()
    uploaded = client.upload("docs.jsonl", body)
    assert uploaded.status_code == 200, uploaded.text
    (path,) = uploaded.json()
    directory = Path(path).parent.parent
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700  # private to the server's user
    answer = client.call("upload", [file_data(path, "docs.jsonl")])
    assert answer.event == "complete", answer
    box, note, cleared = answer.data
    assert box.splitlines() == ["违反本法第二十七条规定的处罚", "网络运营者的义务 第二款", "附则"]
    assert "3 documents from docs.jsonl are in the box" in note
    assert "line breaks inside a document became spaces" in note
    assert cleared is None
    assert not Path(path).exists()  # read once, then deleted
    again = client.call("upload", [file_data(path, "docs.jsonl")])
    assert again.join_status == 400


def test_upload_size_and_count_are_bounded(client, server):
    settings = server[1]
    limit = settings.ui_max_upload_bytes
    too_big = client.upload("big.txt", b"x" * (limit + 70 * 1024))
    assert too_big.status_code == 413 and "ui_max_upload_bytes" in too_big.text
    # Within the form's framing allowance but over the file limit: Gradio's parser stops it.
    over = client.upload("big.txt", b"x" * (limit + 1))
    assert over.status_code == 413, over.text
    # Without a declared length the upload is refused before anything is read.
    chunked = client.http.post(
        f"{client.base}/gradio_api/upload",
        content=iter([b"--x\r\n"]),
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert chunked.status_code == 411
    # Uploads never read: only the newest ui_max_pending_uploads are kept.
    paths = []
    for number in range(settings.ui_max_pending_uploads + 3):
        answer = client.upload(f"n{number}.txt", f"document {number} {uuid.uuid4()}\n".encode())
        paths.extend(answer.json())
    private = Path(paths[0]).parent.parent
    files = _files_under(private)
    kept = [path for path in files if path.parent != private]  # received: <hash>/<name>
    strays = [path for path in files if path.parent == private]  # aborted uploads' temp files
    assert len(kept) <= settings.ui_max_pending_uploads, kept
    assert len(strays) <= settings.ui_max_pending_uploads, strays
    assert Path(paths[-1]) in kept and Path(paths[0]) not in kept
    assert client.call("upload", [file_data(paths[0], "n0.txt")]).join_status == 400
    newest = client.call("upload", [file_data(paths[-1], "n.txt")])
    assert newest.event == "complete" and "1 documents from n.txt" in newest.data[1]


def test_the_page_still_ranks(client):
    answer = client.call("do_rerank", ["网络安全", "", "第一条\n第二条", 0, "truncate"])
    deadline = time.monotonic() + 60
    while "still loading" in json.dumps(answer.data, ensure_ascii=False):
        assert time.monotonic() < deadline
        time.sleep(0.5)
        answer = client.call("do_rerank", ["网络安全", "", "第一条\n第二条", 0, "truncate"])
    assert answer.event == "complete", answer
    assert 'data-index="0"' in answer.data[0] and 'data-index="1"' in answer.data[0]
    assert "2 documents ranked; instruction: the default" in answer.data[0]


def test_refused_routes_do_not_reach_gradio(client):
    for path in ("/gradio_api/file=/etc/passwd", "/gradio_api/upload"):
        answer = client.http.get(client.base + path)
        assert answer.status_code == 404
        assert answer.json()["detail"] == "not found"


@pytest.mark.parametrize("fixture", ["ui_keyed_server", "ui_alone_keyed_server"])
def test_without_the_key_the_page_gives_nothing(request, fixture, secret):
    """Every part of the page (HTML, config, events, uploads, files, queue/SSE) needs the key;
    the exploits without a key end at the door."""
    base = request.getfixturevalue(fixture)[0]
    secret_path, marker = secret
    anonymous = PageClient(base)
    wrong = PageClient(base, headers={"Authorization": "Bearer not-the-key"})
    try:
        for page in (anonymous, wrong):
            gets = [
                "/",
                "/config",
                "/info",
                "/theme.css",
                "/gradio_api/info",
                "/gradio_api/queue/data?session_hash=x",
                "/gradio_api/call/do_rerank/abc",
                f"/gradio_api/file={PASSWD}",
                "/assets/index.js",
            ]
            for path in gets:
                answer = page.http.get(page.base + path, follow_redirects=False)
                assert answer.status_code == 401, (path, answer.status_code)
                assert answer.json()["detail"].startswith("missing or invalid API key")
            assert page.upload("a.txt", b"x\n").status_code == 401
            for target in (PASSWD, str(secret_path)):
                answer = page.call("do_rerank", ["q", "", file_data(target), 0, "truncate"])
                assert answer.join_status == 401 and marker not in answer.text
                assert page.join(0, [file_data(target)]).status_code == 401
        # A browser is sent to the login form instead.
        html = anonymous.http.get(
            anonymous.base + "/", headers={"accept": "text/html"}, follow_redirects=False
        )
        assert html.status_code == 303 and html.headers["location"] == "/login?next=%2Fui%2F"
    finally:
        anonymous.close()
        wrong.close()
