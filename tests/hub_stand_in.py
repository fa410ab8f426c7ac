"""A STAND-IN for the Hugging Face Hub HTTP API, for tests only. It is not the Hub and not a hub server.

It answers the handful of endpoints that ``huggingface_hub`` (2.x, with ``HF_HUB_DISABLE_XET=1``) calls when
``create_repo``, ``upload_folder`` / ``create_commit`` (regular and LFS files, basic LFS transfer),
``PreTrainedModel.push_to_hub``, ``Trainer.push_to_hub``, ``hf_hub_download`` / ``from_pretrained`` and
``ModelCard.load`` talk to ``HF_ENDPOINT``. Repositories live in memory; there are no users, permissions, branches
other than the one written to, or history beyond a list of commit ids. Private repositories answer only requests
that carry an ``Authorization`` header (any value). Every request's ``Authorization`` header is recorded in
``StandInHub.authorizations`` (so a test can check the token was sent) and nothing else is kept about it.

Standard library only. Use::

    with StandInHub() as hub:                     # serves on 127.0.0.1, a free port
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "dummy", "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0"}
        ...run pushes / loads in a subprocess with env (huggingface_hub reads HF_ENDPOINT at import time)...
        hub.files("org/name")                     # {path: bytes} of the repository's current tree

Run ``python tests/hub_stand_in.py [PORT]`` to serve one in the foreground for manual experiments.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz", ".png", ".h5", ".onnx", ".msgpack")
LFS_THRESHOLD_BYTES = 10 * 1024 * 1024  # the Hub stores large files with LFS; ours: weights and binaries above too


class _Repository:
    def __init__(self, private: bool):
        self.private = private
        self.files: dict[str, bytes] = {}
        self.commits: list[str] = [_new_commit_id()]


def _new_commit_id() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex[:8]  # 40 hex digits, like a git sha


def _git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class StandInHub:
    """A threaded HTTP server answering the Hub endpoints listed in the module docstring; a context manager."""

    def __init__(self, port: int = 0):
        self.repositories: dict[str, _Repository] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.authorizations: list[str] = []
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"hub": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StandInHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo_id: str) -> dict[str, bytes]:
        with self.lock:
            return dict(self.repositories[repo_id].files)

    def commit_count(self, repo_id: str) -> int:
        return len(self.repositories[repo_id].commits) - 1  # the first id is the empty initial commit


class _Handler(BaseHTTPRequestHandler):
    hub: StandInHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    # ---------------------------------------------------------------------------------------------------------------
    def _reply(self, status: int, body: bytes | dict | list = b"", headers: dict | None = None, head: bool = False):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, head: bool = False):
        self._reply(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message}, head=head)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _route(self, method: str) -> None:
        authorization = self.headers.get("Authorization")
        if authorization:
            self.hub.authorizations.append(authorization)
        url = urlparse(self.path)
        path = unquote(url.path)
        parts = path.strip("/").split("/")
        body = self._body() if method in ("POST", "PUT") else b""
        head = method == "HEAD"
        with self.hub.lock:
            if path == "/api/whoami-v2":
                return self._reply(200, {"type": "user", "name": "stand-in-user", "orgs": [],
                                         "auth": {"accessToken": {"role": "write"}}})
            if path == "/api/validate-yaml" and method == "POST":  # the real Hub checks the card's metadata here;
                return self._reply(200, {"errors": [], "warnings": []})  # the tests parse cards with ModelCard
            if path == "/api/repos/create" and method == "POST":
                return self._create_repository(json.loads(body or b"{}"))
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                return self._model_api(method, parts, body, url, head)
            if path.startswith("/_lfs/") and method == "PUT":
                self.hub.lfs_objects[parts[1]] = body
                return self._reply(200, {})
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), head)
            if len(parts) == 6 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
                return self._lfs_batch(json.loads(body))
        return self._error(404, "NotFound", f"the stand-in hub does not serve {method} {path}", head)

    do_GET = lambda self: self._route("GET")  # noqa: E731
    do_HEAD = lambda self: self._route("HEAD")  # noqa: E731
    do_POST = lambda self: self._route("POST")  # noqa: E731
    do_PUT = lambda self: self._route("PUT")  # noqa: E731

    # ---------------------------------------------------------------------------------------------------------------
    def _create_repository(self, payload: dict):
        repo_id = f"{payload.get('organization') or 'stand-in-user'}/{payload['name']}"
        url = {"url": f"{self.hub.url}/{repo_id}", "name": repo_id}
        if repo_id in self.hub.repositories:
            return self._reply(409, {"error": "You already created this model repo", **url})
        self.hub.repositories[repo_id] = _Repository(private=payload.get("visibility") == "private"
                                                     or bool(payload.get("private")))
        return self._reply(200, url)

    def _repository(self, repo_id: str, head: bool = False) -> _Repository | None:
        """The repository, or ``None`` after answering as the Hub does: 404 if it does not exist, 401 (with the same
        error code, so that its existence is not revealed) for a private one without an ``Authorization`` header."""
        repository = self.hub.repositories.get(repo_id)
        if repository is None:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found on the stand-in hub", head)
        elif repository.private and not self.headers.get("Authorization"):
            self._error(401, "RepoNotFound", f"Repository {repo_id} not found on the stand-in hub", head)
            return None
        return repository

    def _model_api(self, method: str, parts: list[str], body: bytes, url, head: bool):
        repo_id = "/".join(parts[2:4])
        repository = self._repository(repo_id, head)
        if repository is None:
            return None
        action = parts[4] if len(parts) > 4 else "info"
        if action in ("info", "revision"):
            siblings = [{"rfilename": name, "size": len(content)} for name, content in sorted(repository.files.items())]
            return self._reply(200, {"id": repo_id, "modelId": repo_id, "sha": repository.commits[-1],
                                     "private": repository.private, "siblings": siblings, "tags": []}, head=head)
        if action == "preupload" and method == "POST":
            files = [{"path": item["path"], "shouldIgnore": False, "oid": _existing_oid(repository, item["path"]),
                      "uploadMode": "lfs" if _is_lfs(item["path"], item.get("size", 0)) else "regular"}
                     for item in json.loads(body)["files"]]
            return self._reply(200, {"files": files, "commitOid": repository.commits[-1]})
        if action == "commit" and method == "POST":
            return self._commit(repo_id, repository, body)
        if action == "tree":
            prefix = "/".join(parts[6:])
            listing = [_file_entry(name, content) for name, content in sorted(repository.files.items())
                       if not prefix or name.startswith(prefix.rstrip("/") + "/")]
            return self._reply(200, listing, head=head)
        if action == "paths-info" and method == "POST":
            wanted = parse_qs(body.decode()).get("paths") or json.loads(body or b"{}").get("paths", [])
            return self._reply(200, [_file_entry(name, repository.files[name]) for name in wanted
                                     if name in repository.files])
        return self._error(404, "NotFound", f"the stand-in hub does not serve {method} {url.path}", head)

    def _commit(self, repo_id: str, repository: _Repository, body: bytes):
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "file":
                repository.files[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                if value["oid"] not in self.hub.lfs_objects:
                    return self._error(422, "BadRequest", f"LFS object {value['oid']} was never uploaded")
                repository.files[value["path"]] = self.hub.lfs_objects[value["oid"]]
            elif key == "deletedFile":
                repository.files.pop(value["path"], None)
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                for name in [name for name in repository.files if name.startswith(folder)]:
                    del repository.files[name]
        repository.commits.append(_new_commit_id())
        commit = repository.commits[-1]
        return self._reply(200, {"success": True, "commitOid": commit,
                                 "commitUrl": f"{self.hub.url}/{repo_id}/commit/{commit}"})

    def _lfs_batch(self, payload: dict):
        objects = []
        for item in payload.get("objects", []):
            entry = {"oid": item["oid"], "size": item["size"]}
            if item["oid"] not in self.hub.lfs_objects:  # no "actions": the client skips objects the hub has
                entry["actions"] = {"upload": {"href": f"{self.hub.url}/_lfs/{item['oid']}"}}
            objects.append(entry)
        return self._reply(200, {"transfer": "basic", "objects": objects},
                           {"Content-Type": "application/vnd.git-lfs+json"})

    def _resolve(self, repo_id: str, revision: str, filename: str, head: bool):
        repository = self._repository(repo_id, head)
        if repository is None:
            return None
        if revision not in ("main", repository.commits[-1]):
            return self._error(404, "RevisionNotFound", f"revision {revision} not found on the stand-in hub", head)
        if filename not in repository.files:
            return self._error(404, "EntryNotFound", f"{filename} does not exist in {repo_id}", head)
        content = repository.files[filename]
        etag = hashlib.sha256(content).hexdigest() if _is_lfs(filename, len(content)) else _git_blob_id(content)
        return self._reply(200, content, {"ETag": f'"{etag}"', "X-Repo-Commit": repository.commits[-1],
                                          "Content-Type": "application/octet-stream"}, head=head)


def _is_lfs(path: str, size: int) -> bool:
    return path.endswith(LFS_SUFFIXES) or size >= LFS_THRESHOLD_BYTES


def _existing_oid(repository: _Repository, path: str) -> str | None:
    content = repository.files.get(path)
    if content is None:
        return None
    return hashlib.sha256(content).hexdigest() if _is_lfs(path, len(content)) else _git_blob_id(content)


def _file_entry(name: str, content: bytes) -> dict:
    entry = {"type": "file", "path": name, "size": len(content), "oid": _git_blob_id(content)}
    if _is_lfs(name, len(content)):
        entry["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content), "pointerSize": 134}
    return entry


if __name__ == "__main__":
    with StandInHub(int(sys.argv[1]) if len(sys.argv) > 1 else 0) as stand_in:
        print(f"stand-in hub at {stand_in.url} (Ctrl-C to stop)", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
