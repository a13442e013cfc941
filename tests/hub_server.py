"""A local stand-in for the Hugging Face Hub, so the studio's real download and upload code runs in the tests.

It answers the HTTP calls that huggingface_hub 2.4 (and datasets 5.2 through it) makes for `snapshot_download`,
`hf_hub_download`, `HfApi.model_info` / `dataset_info` / `list_repo_tree`, `HfFileSystem` (listing, reading),
`create_repo` and `upload_file` (read in their sources: huggingface_hub/_snapshot_download.py, file_download.py,
hf_api.py, _commit_api.py, utils/_http.py), with the headers and error codes they read:

    GET  /api/{models|datasets}/OWNER/NAME[/revision/REV]     repo info: id, sha, siblings, gated
    GET  /api/{models|datasets}/OWNER/NAME/tree/REV[/PATH]    file listing (oid, size, lfs), ?recursive=
    HEAD|GET [/datasets]/OWNER/NAME/resolve/REV/PATH          a file: 200 with X-Repo-Commit, ETag (git blob id),
                                                              Content-Length; an LFS file (weights, parquet) is a
                                                              302 to the CDN with X-Linked-Etag (sha256) and
                                                              X-Linked-Size, as the Hub sends it
    HEAD|GET /cdn/SHA256                                      the LFS bytes, on another origin (localhost vs the
                                                              127.0.0.1 the clients call), so no token goes there
    POST /api/repos/create                                    a repo (409 when it exists), token required
    POST /api/validate-yaml                                   a README.md's metadata, checked before its commit
    POST /api/{models|datasets}/OWNER/NAME/preupload/REV      every file "regular" (sent inline in the commit)
    POST /api/{models|datasets}/OWNER/NAME/commit/REV         an ndjson commit of base64 files, token required

Errors as the Hub sends them: X-Error-Code RepoNotFound (401 without a token, 404 with one), RevisionNotFound,
EntryNotFound (with X-Repo-Commit), GatedRepo (401: the info is public, the files are not) and 401 "Invalid
credentials in Authorization header" for a wrong token. Not emulated: LFS or Xet uploads (files the Hub would want
as LFS, over 10 MB, are refused), pagination, pull requests, spaces.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".parquet", ".gguf")
REGULAR_LIMIT = 10 << 20  # above this the Hub asks for an LFS upload, which is not emulated
_API = re.compile(r"^/api/(models|datasets)/([^/]+/[^/]+)(?:/(revision|tree|preupload|commit)/([^/]+)"
                  r"(?:/(.*))?)?$")
_RESOLVE = re.compile(r"^/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    commits: dict[str, Path] = field(default_factory=dict)  # sha -> folder holding that commit's files
    branches: dict[str, str] = field(default_factory=dict)  # "main" -> sha
    gated: bool = False
    private: bool = False


class HubServer:
    """Repos keyed "model/OWNER/NAME" or "dataset/OWNER/NAME", served on 127.0.0.1 at a free port from a thread.

    `token`: the one token the emulator accepts (for writes, and for gated repos). `requests` logs
    (method, path) of every call, so tests can tell what the client fetched.
    """

    def __init__(self, token: str = "hf_emulator_token"):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.cut_downloads = False  # send half of every LFS file, then hang up (a connection dropped mid-file)
        self._store = Path(tempfile.mkdtemp(prefix="hub-emulator-"))
        self._httpd: ThreadingHTTPServer | None = None

    # --- content -------------------------------------------------------------------------------------------------
    def add(self, key: str, folder: Path, *, sha: str | None = None, branch: str = "main", gated: bool = False) -> str:
        """Serve `folder`'s files as a new commit of repo `key` and point `branch` at it; the commit's sha."""
        repo = self.repos.setdefault(key, Repo())
        repo.gated = repo.gated or gated
        sha = sha or hashlib.sha1(f"{key}:{len(repo.commits)}:{folder}".encode()).hexdigest()
        repo.commits[sha] = Path(folder)
        repo.branches[branch] = sha
        return sha

    def files(self, key: str, revision: str = "main") -> dict[str, bytes]:
        """Every file of a commit, as the repo holds it (what an upload left there)."""
        folder = self.repos[key].commits[self.repos[key].branches.get(revision, revision)]
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    # --- life ----------------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> "HubServer":
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the port: later calls fail to connect, as with no network."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._store, ignore_errors=True)

    # --- lookups the handler uses ----------------------------------------------------------------------------------
    def entry(self, folder: Path, path: str) -> dict:
        """A tree / paths-info entry: files carry their git blob id, LFS files their sha256 and size too."""
        p = folder / path
        if p.is_dir():
            return {"type": "directory", "path": path, "oid": git_blob_id(path.encode()), "size": 0}
        data = p.read_bytes()
        out = {"type": "file", "path": path, "size": len(data), "oid": git_blob_id(data)}
        if p.suffix in LFS_SUFFIXES:
            sha256 = hashlib.sha256(data).hexdigest()
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
            out.update(oid=git_blob_id(pointer), lfs={"oid": sha256, "size": len(data), "pointerSize": len(pointer)})
        return out

    def blob(self, sha256: str) -> bytes | None:
        """The LFS file with this sha256, from any commit of any repo (what the CDN serves)."""
        files = (p for repo in self.repos.values() for folder in repo.commits.values() for p in folder.rglob("*"))
        for p in files:
            if p.is_file() and p.suffix in LFS_SUFFIXES and hashlib.sha256(p.read_bytes()).hexdigest() == sha256:
                return p.read_bytes()
        return None

    def commit(self, key: str, branch: str, files: dict[str, bytes]) -> str:
        """A new commit: the branch's files plus `files`, stored in the emulator's own folder."""
        repo = self.repos[key]
        folder = self._store / hashlib.sha1(f"{key}:{len(repo.commits)}".encode()).hexdigest()
        if branch in repo.branches:
            shutil.copytree(repo.commits[repo.branches[branch]], folder)
        folder.mkdir(parents=True, exist_ok=True)
        for path, data in files.items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_bytes(data)
        return self.add(key, folder, branch=branch)


class _Handler(BaseHTTPRequestHandler):
    server_hub: HubServer

    def log_message(self, *args) -> None:  # the tests read hub.requests instead of stderr lines
        pass

    # --- replies ---------------------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, *, head: bool = False) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))  # a HEAD reply names the size of what GET sends
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_cut(self, body: bytes) -> None:
        """A reply that promises all of `body` and stops half-way, closing the connection."""
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:len(body) // 2])
        self.wfile.flush()
        self.close_connection = True

    def _json(self, status: int, data, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str | None, message: str, head: bool = False, **headers) -> None:
        extra = {"X-Error-Message": message, **headers}
        if code:
            extra["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), {"Content-Type": "application/json", **extra},
                   head=head)

    # --- auth ------------------------------------------------------------------------------------------------------
    def _token(self) -> str | None:
        value = self.headers.get("Authorization", "")
        return value.removeprefix("Bearer ").strip() or None

    def _bad_token(self, head: bool = False) -> bool:
        """A wrong token is refused on every call, as the Hub does."""
        token = self._token()
        if token is not None and token != self.server_hub.token:
            self._error(401, None, "Invalid credentials in Authorization header", head=head)
            return True
        return False

    def _repo(self, key: str, head: bool = False) -> Repo | None:
        repo = self.server_hub.repos.get(key)
        if repo is None:
            status = 404 if self._token() else 401  # without a token the Hub cannot tell missing from private
            self._error(status, "RepoNotFound", "Repository not found", head=head)
        return repo

    def _sha(self, repo: Repo, revision: str, head: bool = False) -> str | None:
        sha = repo.branches.get(revision) or (revision if revision in repo.commits else None)
        if sha is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head=head)
        return sha

    # --- routes ----------------------------------------------------------------------------------------------------
    def _route(self, method: str) -> None:
        hub = self.server_hub
        parts = urlsplit(self.path)
        hub.requests.append((method, unquote(parts.path)))
        head = method == "HEAD"
        if self._bad_token(head):
            return
        if m := re.match(r"^/cdn/([0-9a-f]{64})$", parts.path):
            data = hub.blob(m[1])
            if data is None:
                return self._error(404, None, "No such blob")
            if hub.cut_downloads and not head:
                return self._send_cut(data)
            return self._send(200, data, head=head)
        if m := _RESOLVE.match(parts.path):
            return self._resolve("dataset" if m[1] else "model", m[2], unquote(m[3]), unquote(m[4]), head)
        if method == "POST" and parts.path == "/api/repos/create":
            return self._create()
        if method == "POST" and parts.path == "/api/validate-yaml":
            return self._validate_yaml()
        m = _API.match(parts.path)
        if m is None:
            return self._error(404, None, f"The emulator has no route for {method} {parts.path}")
        kind, repo_id, action, revision, sub = m[1][:-1], m[2], m[3], unquote(m[4] or "main"), unquote(m[5] or "")
        key = f"{kind}/{repo_id}"
        if method == "POST" and action in ("preupload", "commit") and self._token() is None:
            return self._error(401, None, "Invalid username or password.")
        repo = self._repo(key)
        if repo is None:
            return
        if action == "preupload":
            return self._preupload(key, revision)
        if action == "commit":
            return self._commit(key, revision)
        sha = self._sha(repo, revision)
        if sha is None:
            return
        folder = repo.commits[sha]
        if action is None or action == "revision":
            siblings = [{"rfilename": f} for f in self.server_hub.files(key, sha)]
            return self._json(200, {"id": repo_id, "sha": sha, "siblings": siblings, "private": False,
                                    "gated": "auto" if repo.gated else False})
        self._tree(folder, sha, sub, parse_qs(parts.query).get("recursive", ["False"])[0].lower() == "true")

    def _tree(self, folder: Path, sha: str, sub: str, recursive: bool) -> None:
        base = folder / sub
        if not base.is_dir():
            return self._error(404, "EntryNotFound", f"{sub} does not exist", **{"X-Repo-Commit": sha})
        found = sorted(base.rglob("*") if recursive else base.iterdir())
        self._json(200, [self.server_hub.entry(folder, p.relative_to(folder).as_posix()) for p in found])

    def _resolve(self, kind: str, repo_id: str, revision: str, path: str, head: bool) -> None:
        hub = self.server_hub
        repo = self._repo(f"{kind}/{repo_id}", head)
        if repo is None:
            return
        sha = self._sha(repo, revision, head)
        if sha is None:
            return
        if repo.gated and self._token() != hub.token:
            return self._error(401, "GatedRepo", f"Access to {kind} {repo_id} is restricted. You must have access "
                               "to it and be authenticated to access it. Please log in.", head,
                               **{"X-Repo-Commit": sha})
        file = repo.commits[sha] / path
        if not file.is_file():
            return self._error(404, "EntryNotFound", "Entry not found", head, **{"X-Repo-Commit": sha})
        entry = hub.entry(repo.commits[sha], path)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{entry["oid"]}"'}
        if "lfs" in entry:  # the Hub redirects LFS files to its CDN, naming the real size and sha256 itself
            cdn = self.server_hub.url.replace("127.0.0.1", "localhost")
            headers.update({"Location": f"{cdn}/cdn/{entry['lfs']['oid']}", "X-Linked-Etag": f'"{entry["lfs"]["oid"]}"',
                            "X-Linked-Size": str(entry["size"])})
            return self._send(302, b"", headers, head=head)
        self._send(200, file.read_bytes(), {**headers, "Content-Type": "application/octet-stream"}, head=head)

    def _create(self) -> None:
        hub = self.server_hub
        if self._token() is None:
            return self._error(401, None, "Invalid username or password.")
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        kind = body.get("type") or "model"
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        key = f"{kind}/{repo_id}"
        url = f"{hub.url}/{'datasets/' if kind == 'dataset' else ''}{repo_id}"
        if key in hub.repos:
            return self._json(409, {"error": f"You already created this {kind} repo", "url": url})
        hub.repos[key] = Repo(private=body.get("visibility") == "private" or bool(body.get("private")))
        hub.commit(key, "main", {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"})
        self._json(200, {"url": url, "name": repo_id})

    def _validate_yaml(self) -> None:
        """A README.md's metadata, as the Hub checks it before a commit that adds one: YAML front matter that parses
        to a mapping, and a base_model that is a repo id or a list of them (400 with the errors otherwise)."""
        import yaml

        content = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))["content"]
        errors = []
        if content.startswith("---\n"):
            try:
                meta = yaml.safe_load(content.split("---\n", 2)[1])
            except (yaml.YAMLError, IndexError) as exc:
                meta, errors = None, [{"message": f"Invalid YAML: {exc}"}]
            if meta is not None and not isinstance(meta, dict):
                errors.append({"message": "metadata must be a mapping"})
            bases = (meta or {}).get("base_model") if isinstance(meta, dict) else None
            for base in [bases] if isinstance(bases, str) else bases or []:
                if not re.fullmatch(r"[\w.-]+/[\w.-]+", str(base)):
                    errors.append({"message": f'"base_model" must be a repo id, not {base!r}'})
        self._json(400 if errors else 200, {"errors": errors, "warnings": []})

    def _preupload(self, key: str, revision: str) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        big = [f["path"] for f in body["files"] if f["size"] > REGULAR_LIMIT]
        if big:
            return self._error(400, None, f"The emulator does not take LFS uploads: {', '.join(big)}")
        repo = self.server_hub.repos[key]
        folder = repo.commits.get(repo.branches.get(revision, ""))
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                  "oid": git_blob_id((folder / f["path"]).read_bytes()) if folder and (folder / f["path"]).is_file()
                  else None} for f in body["files"]]
        self._json(200, {"files": files})

    def _commit(self, key: str, revision: str) -> None:
        lines = self.rfile.read(int(self.headers.get("Content-Length", 0))).splitlines()
        files = {}
        for item in (json.loads(line) for line in lines if line.strip()):
            if item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] != "header":
                return self._error(400, None, f"The emulator does not take {item['key']} operations")
        sha = self.server_hub.commit(key, revision, files)
        prefix = "datasets/" if key.startswith("dataset/") else ""
        self._json(200, {"commitUrl": f"{self.server_hub.url}/{prefix}{key.split('/', 1)[1]}/commit/{sha}",
                         "commitOid": sha, "pullRequestUrl": None})

    def do_GET(self) -> None:  # noqa: N802 - http.server's names
        self._route("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._route("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")
