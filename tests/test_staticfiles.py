"""The static files storage keeps each name's URL (chatsite.staticfiles), and forgets them when collectstatic rewrites the manifest."""

import json

from chatsite.staticfiles import HashedStaticFilesStorage


def storage_with_manifest(tmp_path, paths):
    (tmp_path / "staticfiles.json").write_text(json.dumps({"version": "1.1", "paths": paths, "hash": "x"}))
    return HashedStaticFilesStorage(location=str(tmp_path), base_url="/static/")


def test_it_looks_a_name_up_once(tmp_path, monkeypatch):
    storage = storage_with_manifest(tmp_path, {"chat/chat.js": "chat/chat.abc123.js"})
    looked_up = []
    stored_name = HashedStaticFilesStorage.stored_name
    monkeypatch.setattr(HashedStaticFilesStorage, "stored_name",
                        lambda self, name: looked_up.append(name) or stored_name(self, name))
    assert storage.url("chat/chat.js") == storage.url("chat/chat.js") == "/static/chat/chat.abc123.js"
    assert looked_up == ["chat/chat.js"]


def test_it_forgets_the_urls_when_post_process_rewrites_the_manifest(tmp_path, settings):
    storage = storage_with_manifest(tmp_path, {"chat/chat.js": "chat/chat.abc123.js"})
    assert storage.url("chat/chat.js") == "/static/chat/chat.abc123.js"
    settings.DEBUG = True  # part of the key: DEBUG serves the plain name
    assert storage.url("chat/chat.js") == "/static/chat/chat.js"
    settings.DEBUG = False
    list(storage.post_process({}, dry_run=True))
    storage.hashed_files = {"chat/chat.js": "chat/chat.def456.js"}
    assert storage.url("chat/chat.js") == "/static/chat/chat.def456.js"
