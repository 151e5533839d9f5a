"""A Hugging Face Hub-shaped HTTP server on loopback: the part of the Hub's API that `huggingface_hub` downloads
through, serving repositories from local folders, and a log of every request so tests can count what was fetched.

Point `HF_ENDPOINT` at `HubServer.url` (and set `HF_HUB_OFFLINE=0`) in a process that imports huggingface_hub
afterwards (it reads both once, at import). Served routes, as huggingface_hub calls them:

    GET  /api/models/<org>/<name>[/revision/<rev>]     model info: the commit sha and the file list ("siblings")
    GET  /api/models/<org>/<name>/tree/<rev>[/<path>]  the file tree (`?recursive=true`), with sizes and LFS oids
    HEAD /<org>/<name>/resolve/<rev>/<path>            a file's metadata: ETag, X-Repo-Commit, Content-Length
    GET  /<org>/<name>/resolve/<rev>/<path>            the file itself

Unknown repositories answer 404 with `X-Error-Code: RepoNotFound`, unknown files `EntryNotFound`, as the Hub does.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["HubRequest", "HubServer"]


@dataclass(frozen=True)
class HubRequest:
    """One request the server answered: its method, path, status and the body bytes sent."""

    method: str
    path: str
    status: int
    body_bytes: int


class HubServer:
    """Serves `repos` (repo id → folder) until closed; `requests` lists what was asked, in order."""

    def __init__(self, repos: dict[str, Path]) -> None:
        self.repos = {repo: Path(folder) for repo, folder in repos.items()}
        self.requests: list[HubRequest] = []
        #: Clear it to hold every file download until it is set again (a slow Hub, on demand).
        self.open = threading.Event()
        self.open.set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-server", daemon=True)

    @property
    def url(self) -> str:
        """The endpoint, for `HF_ENDPOINT`."""
        return f"http://127.0.0.1:{self._server.server_port}"

    def commit(self, repo: str) -> str:
        """The commit sha the server reports for `repo` (stable: derived from the repo id)."""
        return hashlib.sha1(repo.encode()).hexdigest()

    def downloads(self, repo: str | None = None) -> dict[str, int]:
        """Files fetched with GET through a resolve URL (of `repo`, or of any), and the bytes sent for each."""
        fetched: dict[str, int] = {}
        for request in self.requests:
            if request.method == "GET" and "/resolve/" in request.path and request.status == 200:
                served_repo, _, rest = request.path.lstrip("/").partition("/resolve/")
                if repo is None or served_repo == repo:
                    name = rest.split("/", 1)[1]
                    fetched[name] = fetched.get(name, 0) + request.body_bytes
        return fetched

    def served_bytes(self, repo: str) -> int:
        """Body bytes sent for `repo`'s files (resolve URLs), whatever they were."""
        return sum(r.body_bytes for r in self.requests if r.path.lstrip("/").startswith(f"{repo}/resolve/"))

    def record(self, request: HubRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.open.set()  # let held downloads finish, so the server can stop
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet: the test reads `hub.requests`
            pass

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def do_GET(self) -> None:
            self._answer(head=False)

        def _answer(self, *, head: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            query = urlsplit(self.path).query
            if path.startswith("/api/models/"):
                self._api(path.removeprefix("/api/models/"), "recursive=true" in query.lower(), head)
            elif "/resolve/" in path:
                repo, _, rest = path.lstrip("/").partition("/resolve/")
                _revision, _, name = rest.partition("/")
                self._resolve(repo, name, head)
            else:
                self._error(404, "RepoNotFound", head)

        def _api(self, rest: str, recursive: bool, head: bool) -> None:
            parts = rest.split("/")
            repo = "/".join(parts[:2])
            folder = hub.repos.get(repo)
            if folder is None:
                return self._error(404, "RepoNotFound", head)
            files = _files(folder)
            if len(parts) >= 4 and parts[2] == "tree":
                prefix = "/".join(parts[4:])
                entries = [_tree_entry(folder, f) for f in files]
                entries = [e for e in entries if e["path"].startswith(prefix)]
                if not recursive:
                    entries = [e for e in entries if "/" not in e["path"].removeprefix(prefix).strip("/")]
                return self._json(entries, head)
            siblings = [{"rfilename": f.relative_to(folder).as_posix()} for f in files]
            info = {"id": repo, "modelId": repo, "sha": hub.commit(repo), "private": False, "siblings": siblings}
            return self._json(info, head)

        def _resolve(self, repo: str, name: str, head: bool) -> None:
            folder = hub.repos.get(repo)
            if folder is None:
                return self._error(404, "RepoNotFound", head)
            file = folder / name
            if not file.is_file() or ".." in Path(name).parts:
                return self._error(404, "EntryNotFound", head)
            if not head:
                hub.open.wait()
            data = file.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", hub.commit(repo))
            self.end_headers()
            if not head:
                self.wfile.write(data)
            hub.record(HubRequest(self.command, self.path, 200, 0 if head else len(data)))

        def _json(self, payload: object, head: bool) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data)
            hub.record(HubRequest(self.command, self.path, 200, 0 if head else len(data)))

        def _error(self, status: int, code: str, head: bool) -> None:
            data = json.dumps({"error": code}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data)
            hub.record(HubRequest(self.command, self.path, status, 0))

    return Handler


def _tree_entry(folder: Path, file: Path) -> dict[str, object]:
    data = file.read_bytes()
    entry: dict[str, object] = {
        "type": "file",
        "path": file.relative_to(folder).as_posix(),
        "size": len(data),
        "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(),
    }
    if file.suffix in (".safetensors", ".bin", ".ckpt"):  # weights live in LFS on the Hub
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return entry
