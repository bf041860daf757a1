"""A tiny in-process fake of the Hugging Face Hub's HTTP protocol, for tests without network.

Serves model repos from `{repo_id: {filename: bytes}}` on 127.0.0.1 (random port):

    HEAD/GET /{repo}/resolve/{rev}/{path}      file bytes + X-Repo-Commit, ETag, Content-Length
    GET  /api/models/{repo}/revision/{rev}     {"id", "sha", "siblings"}
    GET  /api/models/{repo}/tree/{rev}[/path]  [{"type": "file", "path", "size", "oid"}]
    POST /api/repos/create                     create an empty repo (409 if it exists)
    POST /api/validate-yaml                    always valid
    POST /api/models/{repo}/preupload/{rev}    every file "regular" (inline base64 in the commit)
    POST /api/models/{repo}/commit/{rev}       apply an ndjson commit of regular files

Missing repos answer 404 with `X-Error-Code: RepoNotFound`, missing files `EntryNotFound`
(with X-Repo-Commit, as the real Hub does); `hub.fail_with = 503` fails every GET/HEAD;
`hub.stall()` holds every GET (HEAD requests, such as a reachability probe, are answered) until
`hub.release()` or `hub.stop()`: an endpoint that answers the probe and then stalls.
Every request is recorded in `hub.requests` as (method, path) so tests can assert cache reuse.

    with FakeHub({"user/tiny": {"config.json": b"{}"}}) as hub:
        os.environ["HF_ENDPOINT"] = hub.url
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import unquote, urlsplit


def _commit_sha(repo_id: str, files: dict[str, bytes], counter: int) -> str:
    digest = hashlib.sha1(f"{repo_id}:{counter}".encode())
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """A threaded loopback HTTP server speaking enough of the Hub protocol for downloads and commits."""

    def __init__(self, repos: dict[str, dict[str, bytes]] | None = None):
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_with: int | None = None  # answer every request with this HTTP status (e.g. 503)
        self._lock = threading.Lock()
        self._flowing = threading.Event()  # cleared while GET requests are held (stall mode)
        self._flowing.set()
        self._counter = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for repo_id, files in (repos or {}).items():
            self.set_repo(repo_id, files)

    # --- repo contents ---------------------------------------------------------------
    def set_repo(self, repo_id: str, files: dict[str, bytes]) -> str:
        """Create or replace a repo; returns its new commit sha."""
        with self._lock:
            self.repos[repo_id] = dict(files)
            return self._new_commit(repo_id)

    def _new_commit(self, repo_id: str) -> str:
        self._counter += 1
        self.commits[repo_id] = _commit_sha(repo_id, self.repos[repo_id], self._counter)
        return self.commits[repo_id]

    # --- lifecycle ---------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeHub:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fakehub", daemon=True)
        self._thread.start()
        return self

    def stall(self) -> None:
        """Hold every GET request from now on until `release()`; HEAD requests are still answered."""
        self._flowing.clear()

    def release(self) -> None:
        """Let held GET requests go on and new ones through."""
        self._flowing.set()

    def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- request accounting ------------------------------------------------------------
    def count(self, method: str | None = None, contains: str = "") -> int:
        """Number of recorded requests with this method (any if None) whose path contains `contains`."""
        with self._lock:
            return sum(1 for m, p in self.requests if (method is None or m == method) and contains in p)

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.0"  # one request per connection: a stopped server really is gone

    def log_message(self, format: str, *args) -> None:  # keep test output quiet
        pass

    # --- helpers -----------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self._json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})})

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _path(self) -> str:
        path = urlsplit(self.path).path
        with self.hub._lock:
            self.hub.requests.append((self.command, path))
        return path

    def _repo_at(self, repo_id: str, rev: str) -> tuple[dict[str, bytes], str] | None:
        """(files, sha) of repo at rev, or None after answering 404."""
        hub = self.hub
        if repo_id not in hub.repos:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        sha = hub.commits[repo_id]
        if unquote(rev) not in ("main", sha):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return None
        return hub.repos[repo_id], sha

    # --- verbs -------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self._path()
        if self.command == "GET":  # do_HEAD comes here too: a HEAD is never held
            self.hub._flowing.wait()
        if self.hub.fail_with:
            self._error(self.hub.fail_with, "Unavailable", "the fake hub is failing on purpose")
            return
        if path.startswith("/api/models/"):
            rest = path[len("/api/models/"):]
            for kind in ("/revision/", "/tree/"):
                if kind in rest:
                    repo_id, _, tail = rest.partition(kind)
                    rev, _, sub = tail.partition("/")
                    found = self._repo_at(repo_id, rev)
                    if found is None:
                        return
                    files, sha = found
                    if kind == "/revision/":
                        self._json(200, {"id": repo_id, "sha": sha,
                                         "siblings": [{"rfilename": name} for name in sorted(files)]})
                    else:
                        self._json(200, [{"type": "file", "path": name, "size": len(data), "oid": _git_blob_oid(data)}
                                         for name, data in sorted(files.items()) if name.startswith(sub)])
                    return
            self._error(404, "EntryNotFound", f"unknown API route {path}")
            return
        if "/resolve/" not in path:
            self._error(404, "RepoNotFound", f"unknown route {path}")
            return
        repo_id, _, tail = path.lstrip("/").partition("/resolve/")
        rev, _, filename = tail.partition("/")
        found = self._repo_at(repo_id, rev)
        if found is None:
            return
        files, sha = found
        filename = unquote(filename)
        if filename not in files:
            self._error(404, "EntryNotFound", f"{filename} does not exist on {rev}", {"X-Repo-Commit": sha})
            return
        data = files[filename]
        self._send(200, data, {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'},
                   content_type="application/octet-stream")

    def do_POST(self) -> None:
        path = self._path()
        body = self._body()
        hub = self.hub
        if path == "/api/repos/create":
            payload = json.loads(body or b"{}")
            name, org = payload.get("name"), payload.get("organization")
            repo_id = f"{org}/{name}" if org else name
            url = f"http://{self.headers.get('Host')}/{repo_id}"
            if repo_id in hub.repos:  # the real Hub also returns the url with its 409
                self._json(409, {"error": "You already created this model repo", "url": url})
                return
            hub.set_repo(repo_id, {})
            self._json(200, {"url": url, "name": repo_id})
            return
        if path == "/api/validate-yaml":
            self._json(200, {"errors": [], "warnings": []})
            return
        if path.startswith("/api/models/") and ("/preupload/" in path or "/commit/" in path):
            rest = path[len("/api/models/"):]
            kind = "/preupload/" if "/preupload/" in rest else "/commit/"
            repo_id, _, rev = rest.partition(kind)
            if self._repo_at(repo_id, rev) is None:
                return
            if kind == "/preupload/":
                files = json.loads(body)["files"]
                self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                            "oid": None} for f in files]})
                return
            with hub._lock:
                for line in body.splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        value = item["value"]
                        hub.repos[repo_id][value["path"]] = base64.b64decode(value["content"])
                    elif item["key"] in ("deletedFile", "deletedFolder"):
                        hub.repos[repo_id].pop(item["value"]["path"], None)
                    elif item["key"] != "header":
                        self._error(400, "BadRequest", f"fake hub cannot apply {item['key']!r}")
                        return
                sha = hub._new_commit(repo_id)
            host = self.headers.get("Host")
            self._json(200, {"success": True, "commitOid": sha, "commitUrl": f"http://{host}/{repo_id}/commit/{sha}"})
            return
        self._error(404, "EntryNotFound", f"unknown route {path}")
