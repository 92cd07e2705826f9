"""A small Hub-compatible HTTP server on 127.0.0.1 for offline push / download tests.

It implements the endpoints huggingface_hub and transformers use for model repos (and Spaces, kept apart under
``spaces/<repo>``): create a repo, pre-upload (every file "regular", sent inline), commit (NDJSON), resolve a
file (HEAD / GET with the headers the client checks), repo info and its file list (``tree``). Files are kept in
memory per repo: ``repos`` holds "main", ``refs`` the other revisions (a commit with ``create_pr=1`` opens the
pull-request ref ``refs/pr/<n>``, a copy of the revision it was based on with the commit's files, and answers its
``pullRequestUrl``; a file or repo info is served from the revision asked for).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse


def _key(kind: str, repo: str) -> str:
    """Where a repo of ``kind`` ("models" / "model", or "spaces" / "space") is kept: a model under its id."""
    return repo if kind in ("models", "model") else f"spaces/{repo}"


class _State:
    def __init__(self):
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: dict[str, list[str]] = {}
        self.refs: dict[str, dict[str, dict[str, bytes]]] = {}  # repo -> revision other than main -> files
        self.ref_commits: dict[tuple[str, str], str] = {}
        self.lock = threading.Lock()
        self.log: list[str] = []
        self.auth: list[tuple[str, str | None]] = []  # (request, its Authorization header) of every download


def _handler(state: _State):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _send(self, code: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head and body:
                self.wfile.write(body)

        def _json(self, code: int, data, headers: dict | None = None):
            self._send(code, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _commit_id(self, repo: str, revision: str = "main") -> str:
            """The commit ``revision`` names: a branch's or ref's last commit, or the commit itself."""
            if revision in state.commits.get(repo, []) or revision in state.ref_commits.values():
                return revision
            if revision != "main":
                return state.ref_commits.get((repo, revision), "0" * 40)
            commits = state.commits.get(repo) or ["0" * 40]
            return commits[-1]

        def _files(self, repo: str, revision: str) -> dict[str, bytes] | None:
            """The files of ``repo`` at ``revision`` (a branch name, a ref or a commit of main), or None."""
            if revision in ("main", *state.commits.get(repo, [])):
                return state.repos[repo]
            refs = state.refs.get(repo, {})
            by_commit = {oid: ref for (r, ref), oid in state.ref_commits.items() if r == repo}
            return refs.get(by_commit.get(revision, revision))

        def _parts(self) -> list[str]:
            return [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]  # revisions hold "/"

        # -- routes ------------------------------------------------------------------------------------------
        def do_POST(self):
            path = unquote(urlparse(self.path).path)
            state.log.append(f"POST {path}")
            body = self._body()
            if path == "/api/repos/create":
                data = json.loads(body or b"{}")
                repo = f"{data.get('organization') or 'user'}/{data['name']}" if "/" not in data["name"] \
                    else data["name"]
                repo = _key(data.get("type") or "model", repo)
                with state.lock:
                    if repo in state.repos:
                        return self._json(409, {"error": "You already created this model repo", "url":
                                                f"http://{self.headers['Host']}/{repo}"})
                    state.repos[repo] = {}
                    state.commits[repo] = []
                return self._json(200, {"url": f"http://{self.headers['Host']}/{repo}", "name": repo})
            if path == "/api/validate-yaml":
                return self._json(200, {"errors": [], "warnings": []})
            parts = self._parts()
            kinds = ("models", "spaces")
            if len(parts) >= 6 and parts[0] == "api" and parts[1] in kinds and parts[4] == "preupload":
                data = json.loads(body)
                return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                  for f in data.get("files", [])], "commitOid": "0" * 40})
            if len(parts) >= 6 and parts[0] == "api" and parts[1] in kinds and parts[4] == "commit":
                repo = _key(parts[1], f"{parts[2]}/{parts[3]}")
                if repo not in state.repos:
                    return self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                files = {}
                deleted = []
                for line in body.decode().splitlines():
                    if not line.strip():
                        continue
                    item = json.loads(line)
                    if item["key"] == "file":
                        v = item["value"]
                        files[v["path"]] = base64.b64decode(v["content"]) if v.get("encoding") == "base64" \
                            else v["content"].encode()
                    elif item["key"] in ("deletedFile", "deletedFolder"):
                        deleted.append(item["value"]["path"])
                    elif item["key"] == "lfsFile":
                        return self._json(400, {"error": "this test server takes regular uploads only"})
                revision = "/".join(parts[5:]) or "main"
                create_pr = parse_qs(urlparse(self.path).query).get("create_pr") == ["1"]
                return self._commit(repo, revision, create_pr, files, deleted)
            return self._json(404, {"error": f"no route POST {path}"})

        def _commit(self, repo: str, revision: str, create_pr: bool, files: dict, deleted: list):
            host = self.headers["Host"]
            with state.lock:
                base = self._files(repo, revision)
                if base is None:
                    return self._json(404, {"error": f"Invalid rev id: {revision}"},
                                      {"X-Error-Code": "RevisionNotFound"})
                pr_url = None
                if create_pr:
                    number = len(state.refs.setdefault(repo, {})) + 1
                    revision, base = f"refs/pr/{number}", dict(base)
                    state.refs[repo][revision] = base
                    pr_url = f"http://{host}/{repo}/discussions/{number}"
                for p in deleted:
                    base.pop(p, None)
                base.update(files)
                count = len(state.commits[repo]) + len(state.ref_commits)
                oid = hashlib.sha1(json.dumps(sorted(base)).encode() + str(count).encode()).hexdigest()
                if revision == "main":
                    state.commits[repo].append(oid)
                else:
                    state.ref_commits[(repo, revision)] = oid
            return self._json(200, {"commitUrl": f"http://{host}/{repo}/commit/{oid}", "commitOid": oid,
                                    "success": True, "pullRequestUrl": pr_url})

        def _resolve(self, head: bool):
            path = unquote(urlparse(self.path).path)
            state.log.append(f"{'HEAD' if head else 'GET'} {path}")
            state.auth.append((f"{'HEAD' if head else 'GET'} {path}", self.headers.get("Authorization")))
            parts = self._parts()
            kind = parts.pop(0) if parts[0] == "spaces" else "models"
            if len(parts) >= 5 and parts[2] == "resolve":
                repo, revision, filename = _key(kind, f"{parts[0]}/{parts[1]}"), parts[3], "/".join(parts[4:])
                if repo not in state.repos:
                    return self._send(404, b"", {"X-Error-Code": "RepoNotFound"}, head)
                tree = self._files(repo, revision)
                if tree is None:
                    return self._send(404, b"", {"X-Error-Code": "RevisionNotFound"}, head)
                data = tree.get(filename)
                commit = self._commit_id(repo, revision)
                if data is None:
                    return self._send(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, head)
                etag = f'"{hashlib.sha1(data).hexdigest()}"'
                return self._send(200, data, {"ETag": etag, "X-Repo-Commit": commit,
                                              "Content-Type": "application/octet-stream"}, head)
            if len(parts) >= 6 and parts[0] == "api" and parts[1] in ("models", "spaces") and parts[4] == "tree":
                return self._tree(_key(parts[1], f"{parts[2]}/{parts[3]}"), parts[5], "/".join(parts[6:]))
            if len(parts) >= 3 and parts[0] == "api" and parts[1] in ("models", "spaces"):
                repo = _key(parts[1], f"{parts[2]}/{parts[3]}" if len(parts) >= 4 else parts[2])
                if repo not in state.repos:
                    return self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                revision = "/".join(parts[5:]) if len(parts) >= 6 and parts[4] == "revision" else "main"
                files = self._files(repo, revision)
                if files is None:
                    return self._json(404, {"error": f"Invalid rev id: {revision}"},
                                      {"X-Error-Code": "RevisionNotFound"})
                return self._json(200, {"id": repo, "modelId": repo, "sha": self._commit_id(repo, revision),
                                        "private": False,
                                        "siblings": [{"rfilename": f} for f in sorted(files)], "tags": []})
            return self._json(404, {"error": f"no route {path}"})

        def _tree(self, repo: str, revision: str, folder: str):
            """Every file of ``repo`` at ``revision`` under ``folder`` (one page, as ``recursive=True`` lists)."""
            files = self._files(repo, revision) if repo in state.repos else None
            if files is None:
                return self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            return self._json(200, [{"type": "file", "path": p, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                                    for p, d in sorted(files.items()) if p.startswith(folder)])

        def do_GET(self):
            self._resolve(head=False)

        def do_HEAD(self):
            self._resolve(head=True)

    return Handler


class HubServer:
    """``with HubServer() as hub: os.environ["HF_ENDPOINT"] = hub.url``"""

    def __init__(self):
        self.state = _State()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
