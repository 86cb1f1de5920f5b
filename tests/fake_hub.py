"""A local stand-in for the Hugging Face Hub HTTP API, so upload code runs for real without a network.

Only the transport is faked: ``push_to_hub`` / ``upload_folder`` / ``create_repo`` run unchanged and talk
HTTP to a ``http.server`` on 127.0.0.1. The server implements the endpoints those calls use (repo
creation, YAML validation, repo info, tree and paths-info listings, preupload, the basic LFS transfer
(batch + PUT), commit, file resolve) and records every committed file as ``files[repo_id][path] = bytes``.
Writes (repo creation, commits) need a token (``Authorization: Bearer ...``) and answer 401 without one.
Like the Hub, preupload sends binary or large files to LFS and small text files inline ("regular").
Xet storage is not offered (``HF_HUB_DISABLE_XET=1``).

``huggingface_hub`` and ``datasets`` read ``HF_ENDPOINT`` when they are imported, so point code at the
stand-in by running it in a subprocess with ``FakeHub.env`` (what the ``fake_hub`` fixture does for the
scripts' ``--push-to-hub``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

REPO_PREFIX = r"(?:(?P<type>models|datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)"
REGULAR_MAX_BYTES = 10 * 1024 * 1024


@dataclass
class FakeHub:
    """The stand-in's state: committed files per repo id, the request log, and the endpoint URL."""

    endpoint: str = ""
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)
    repo_types: dict[str, str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)
    commits: int = 0

    @property
    def env(self) -> dict[str, str]:
        """Environment that sends ``huggingface_hub`` (and ``datasets``) to this stand-in."""
        return {"HF_ENDPOINT": self.endpoint, "HF_TOKEN": "fake", "HF_HUB_DISABLE_XET": "1",
                "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    # ------------------------------------------------------------------------------------------ plumbing

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body if body is not None else {}).encode()
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, code: str, message: str) -> None:
        self._send(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _repo(self, match: re.Match) -> tuple[str, dict[str, bytes] | None]:
        repo_id = unquote(match["repo"])
        return repo_id, self.hub.files.get(repo_id)

    def _route(self) -> None:
        path = unquote(urlsplit(self.path).path)
        self.hub.requests.append(f"{self.command} {self.path}")
        routes = [
            ("POST", r"/api/repos/create", self._create_repo),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("GET", rf"/api/{REPO_PREFIX}(?:/revision/(?P<rev>[^/]+))?", self._repo_info),
            ("GET", rf"/api/{REPO_PREFIX}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", self._tree),
            ("POST", rf"/api/{REPO_PREFIX}/paths-info/(?P<rev>[^/]+)", self._paths_info),
            ("POST", rf"/api/{REPO_PREFIX}/preupload/(?P<rev>[^/]+)", self._preupload),
            ("POST", rf"/api/{REPO_PREFIX}/commit/(?P<rev>[^/]+)", self._commit),
            ("POST", rf"/{REPO_PREFIX}\.git/info/lfs/objects/batch", self._lfs_batch),
            ("PUT", r"/fake-lfs/(?P<oid>[0-9a-f]{64})", self._lfs_put),
            ("GET", rf"/{REPO_PREFIX}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self._resolve),
            ("HEAD", rf"/{REPO_PREFIX}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self._resolve),
        ]
        for method, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if method == self.command and match:
                handler(match)
                return
        self._error(404, "NotImplemented", f"fake hub: no route for {self.command} {path}")

    do_GET = do_POST = do_HEAD = do_PUT = _route

    # ------------------------------------------------------------------------------------------ endpoints

    def _authorized(self) -> bool:
        """Writes need a token, as on the Hub; without one the answer is the Hub's 401."""
        if self.headers.get("Authorization", "").startswith("Bearer ") and self.headers["Authorization"][7:].strip():
            return True
        self._error(401, "Unauthorized", "Invalid username or password.")
        return False

    def _create_repo(self, match: re.Match) -> None:
        if not self._authorized():
            return
        request = json.loads(self._body() or b"{}")
        repo_id = f"{request['organization']}/{request['name']}" if request.get("organization") else request["name"]
        exists = repo_id in self.hub.files
        self.hub.files.setdefault(repo_id, {})
        self.hub.repo_types[repo_id] = request.get("type", "model")
        prefix = {"dataset": "datasets/", "space": "spaces/"}.get(request.get("type", "model"), "")
        url = {"url": f"{self.hub.endpoint}/{prefix}{repo_id}", "name": repo_id}
        if exists:
            self._send(409, {"error": "You already created this repo", **url})
        else:
            self._send(200, url)

    def _validate_yaml(self, match: re.Match) -> None:
        """Parse the card's YAML header like the Hub does; a broken header is a 400 with the parser's error."""
        content = json.loads(self._body() or b"{}").get("content", "")
        header = re.match(r"^---\n(.*?)\n---\n", content, re.DOTALL)
        try:
            if header:
                yaml.safe_load(header[1])
        except yaml.YAMLError as err:
            self._send(400, {"errors": [{"message": str(err)}]}, {"X-Error-Code": "BadRequest"})
            return
        self._send(200, {"errors": [], "warnings": []})

    def _repo_info(self, match: re.Match) -> None:
        repo_id, files = self._repo(match)
        if files is None:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return
        siblings = [{"rfilename": path} for path in sorted(files)]
        self._send(200, {"id": repo_id, "sha": self._sha_of(repo_id), "private": False, "siblings": siblings,
                         "lastModified": "2026-01-01T00:00:00.000Z", "tags": [], "cardData": {}})

    def _sha_of(self, repo_id: str) -> str:
        listing = json.dumps(sorted((p, _sha(d)) for p, d in self.hub.files.get(repo_id, {}).items()))
        return hashlib.sha1(listing.encode()).hexdigest()

    @staticmethod
    def _entry(path: str, data: bytes) -> dict[str, Any]:
        return {"type": "file", "path": path, "size": len(data), "oid": _git_oid(data)}

    def _tree(self, match: re.Match) -> None:
        repo_id, files = self._repo(match)
        if files is None:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return
        folder = (match["path"] or "").strip("/")
        inside = {p: d for p, d in files.items() if not folder or p.startswith(folder + "/")}
        if folder and not inside:
            self._error(404, "EntryNotFound", f"{folder} does not exist in {repo_id}")
            return
        entries = [self._entry(p, d) for p, d in sorted(inside.items())]
        dirs = sorted({"/".join(p.split("/")[:i]) for p in inside for i in range(1, p.count("/") + 1)})
        entries += [{"type": "directory", "path": d, "oid": "0" * 40, "size": 0}
                    for d in dirs if not folder or d.startswith(folder + "/")]
        self._send(200, entries)

    def _paths_info(self, match: re.Match) -> None:
        _, files = self._repo(match)
        body = self._body().decode()  # JSON or form-encoded paths=...&paths=...
        paths = json.loads(body).get("paths", []) if body.lstrip().startswith("{") else parse_qs(body).get("paths", [])
        self._send(200, [self._entry(p, files[p]) for p in paths if files and p in files])

    @staticmethod
    def _upload_mode(file: dict[str, Any]) -> str:
        sample = base64.b64decode(file.get("sample", ""))
        try:
            sample.decode("utf-8")
        except UnicodeDecodeError:
            return "lfs"
        return "lfs" if b"\0" in sample or file.get("size", 0) > REGULAR_MAX_BYTES else "regular"

    def _preupload(self, match: re.Match) -> None:
        request = json.loads(self._body() or b"{}")
        self._send(200, {"files": [{"path": f["path"], "uploadMode": self._upload_mode(f), "shouldIgnore": False,
                                    "oid": None} for f in request.get("files", [])]})

    def _lfs_batch(self, match: re.Match) -> None:
        request = json.loads(self._body() or b"{}")
        objects = []
        for obj in request.get("objects", []):
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.hub.lfs_objects:  # no "actions": the object is already stored
                entry["actions"] = {"upload": {"href": f"{self.hub.endpoint}/fake-lfs/{obj['oid']}", "header": {}}}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_put(self, match: re.Match) -> None:
        data = self._body()
        if _sha(data) != match["oid"]:
            self._error(400, "BadRequest", f"LFS upload: sha256 {_sha(data)} != {match['oid']}")
            return
        self.hub.lfs_objects[match["oid"]] = data
        self._send(200, {})

    def _commit(self, match: re.Match) -> None:
        if not self._authorized():
            return
        repo_id, files = self._repo(match)
        if files is None:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return
        staged = dict(files)
        for line in self._body().decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "file":
                staged[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                if value["oid"] not in self.hub.lfs_objects:
                    self._error(400, "BadRequest", f"LFS object {value['oid']} of {value['path']} was never uploaded")
                    return
                staged[value["path"]] = self.hub.lfs_objects[value["oid"]]
            elif key == "deletedFile":
                staged.pop(value["path"], None)
            elif key == "deletedFolder":
                staged = {p: d for p, d in staged.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            elif key != "header":
                self._error(400, "BadRequest", f"fake hub: unsupported commit operation {key!r}")
                return
        files.clear()
        files.update(staged)
        self.hub.commits += 1
        oid = self._sha_of(repo_id)
        self._send(200, {"commitUrl": f"{self.hub.endpoint}/{repo_id}/commit/{oid}", "commitOid": oid,
                         "success": True})

    def _resolve(self, match: re.Match) -> None:
        repo_id, files = self._repo(match)
        if files is None:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return
        path = match["path"]
        if path not in files:
            self._error(404, "EntryNotFound", f"{path} does not exist in {repo_id}")
            return
        data = files[path]
        self._send(200, data, {"Content-Type": "application/octet-stream", "ETag": f'"{_git_oid(data)}"',
                               "X-Repo-Commit": self._sha_of(repo_id)})


def serve_fake_hub() -> Iterator[FakeHub]:
    """Start the stand-in on a free port of 127.0.0.1 for the duration of the generator."""
    hub = FakeHub()
    handler = type("FakeHubHandler", (_Handler,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    hub.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
