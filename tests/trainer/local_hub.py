"""A local stand-in for the Hugging Face Hub, so the real ``huggingface_hub`` client runs unmodified offline.

It speaks the part of the Hub HTTP API that ``create_repo`` and ``upload_folder`` use:
``POST /api/repos/create``, ``POST /api/validate-yaml`` (a README.md is checked before upload),
``POST /api/models/<repo>/preupload/<revision>`` (every file is answered "regular", so its content
arrives base64-encoded inside the commit) and ``POST /api/models/<repo>/commit/<revision>`` (the
ndjson commit payload). Committed files are written under ``root/<repo>/<revision>/`` and every
commit is recorded, so a test can assert what arrived and with which message.

The client is pointed here through ``huggingface_hub.constants.ENDPOINT`` (what ``HF_ENDPOINT``
sets when the package is imported); a dummy ``HF_TOKEN`` is required on every write, as on the Hub.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

USER = "local-user"
"""The namespace a repository created without one lands in (the token's user on the real Hub)."""

_REPO_ROUTE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<action>preupload|commit)/(?P<revision>.+)$")


@dataclass(frozen=True)
class Commit:
    """One commit the server accepted."""

    repo_id: str
    revision: str
    message: str
    paths: tuple[str, ...]


@dataclass
class LocalHub:
    """The server's state; ``fail_commits`` and ``commit_gate`` let a test make commits fail or wait."""

    root: Path
    url: str = ""
    repos: set[str] = field(default_factory=set)
    commits: list[Commit] = field(default_factory=list)
    fail_commits: int | None = None
    """HTTP status every commit gets instead of succeeding (``None``: commits succeed)."""
    commit_gate: threading.Event | None = None
    """When set, a commit waits until the event is set (a push that is still in progress)."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Every file of ``repo_id`` at ``revision``, by its path in the repository."""
        base = self.root / repo_id / revision
        return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}

    def messages(self, repo_id: str | None = None) -> list[str]:
        return [c.message for c in self.commits if repo_id is None or c.repo_id == repo_id]

    def create(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        with self.lock:
            if repo_id in self.repos:
                return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}
            self.repos.add(repo_id)
        return 200, {"url": f"{self.url}/{repo_id}", "name": repo_id}

    def commit(self, repo_id: str, revision: str, lines: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        if self.commit_gate is not None:
            self.commit_gate.wait(timeout=60)
        if self.fail_commits is not None:
            return self.fail_commits, {"error": "the local hub was told to fail this commit"}
        header = next(line["value"] for line in lines if line["key"] == "header")
        base = self.root / repo_id / revision
        paths = []
        for line in lines:
            if line["key"] == "file":
                value = line["value"]
                target = base / value["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(base64.b64decode(value["content"]))
                paths.append(value["path"])
            elif line["key"] != "header":
                return 400, {"error": f"the local hub does not handle {line['key']!r} operations"}
        with self.lock:
            self.commits.append(Commit(repo_id, revision, header["summary"], tuple(paths)))
            oid = hashlib.sha1(f"{repo_id}{revision}{len(self.commits)}".encode()).hexdigest()
        return 200, {"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}


def _handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            del format, args

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status >= 500:
                self.send_header("Retry-After", "0")  # the client retries a 5xx: keep the test short
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # http.server dispatches on this name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not self.headers.get("Authorization", "").startswith("Bearer "):
                self._reply(401, {"error": "Invalid credentials in Authorization header"})
                return
            path = urlparse(self.path).path
            if path == "/api/repos/create":
                self._reply(*hub.create(json.loads(body)))
            elif path == "/api/validate-yaml":
                self._reply(200, {"errors": [], "warnings": []})
            elif (match := _REPO_ROUTE.match(path)) is None or match["repo"] not in hub.repos:
                self._reply(404, {"error": f"Repository not found: {path}"})
            elif match["action"] == "preupload":
                files = json.loads(body)["files"]
                answer = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                self._reply(200, {"files": answer})
            else:
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                self._reply(*hub.commit(match["repo"], unquote(match["revision"]), lines))

    return Handler


class LocalHubServer:
    """``http.server`` on 127.0.0.1 at a free port, in a daemon thread; a context manager."""

    def __init__(self, root: Path) -> None:
        self.hub = LocalHub(root)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.hub))
        self._server.daemon_threads = True
        self.hub.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)

    def __enter__(self) -> LocalHub:
        self._thread.start()
        return self.hub

    def __exit__(self, *exc: object) -> None:
        if self.hub.commit_gate is not None:
            self.hub.commit_gate.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
