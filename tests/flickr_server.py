"""A local HTTP server speaking the Flickr REST protocol as flickrapi uses it, for tests and bench.

flickrapi sends every call as a form POST to its REST_URL, signed with OAuth 1 (HMAC-SHA1) in
the Authorization header, and with format=json&nojsoncallback=1 gets JSON replies carrying
`stat: ok` or `stat: fail` with a Flickr error `code` and `message`. This server checks the
consumer key and the signature (so a wrong key or secret fails as Flickr fails), answers the
methods the scraper uses, and serves the photo files itself at /img/<id>_<size>.jpg.

Faults are scripted per API method or per photo, consumed one per request: an HTTP status
(500, 429, ...), None (answer normally: lets a later page fail), "hang" (answer after `hang_s`, past the client's timeout), "drop" (for images: headers and half the body, then the connection closes;
for API calls: the connection closes without a reply). `latency` adds a delay to every request,
`image_delay` (or `delays[photo id]`) pauses image bodies halfway. Every request is logged for assertions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from oauthlib.oauth1.rfc5849 import signature, utils
from PIL import Image

LICENSES = [
    {"id": 0, "name": "All Rights Reserved", "url": ""},
    {"id": 4, "name": "Attribution License", "url": "https://creativecommons.org/licenses/by/2.0/"},
    {"id": 5, "name": "Attribution-ShareAlike License",
     "url": "https://creativecommons.org/licenses/by-sa/2.0/"},
    {"id": 9, "name": "Public Domain Dedication (CC0)",
     "url": "https://creativecommons.org/publicdomain/zero/1.0/"},
    {"id": 10, "name": "Public Domain Mark",
     "url": "https://creativecommons.org/publicdomain/mark/1.0/"},
]


def jpeg(w: int, h: int, color=(120, 80, 40), mode: str = "RGB", quality: int = 90) -> bytes:
    """A small JPEG with some texture (a gradient), in `mode` (RGB, L, CMYK)."""
    im = Image.linear_gradient("L").resize((w, h))
    if mode == "RGB":
        im = Image.merge("RGB", [im.point(lambda v, c=c: (v + c) % 256) for c in color])
    elif mode == "CMYK":
        im = Image.merge("CMYK", [im, im.point(lambda v: 255 - v), im, Image.new("L", (w, h), 0)])
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class Photo:
    def __init__(self, pid: str, sizes: dict, *, license: int, owner: str, ownername: str,
                 title: str, media: str, content_type: str, dims: dict | None):
        self.id = pid
        self.sizes = sizes  # suffix -> bytes
        self.license = license
        self.owner = owner
        self.ownername = ownername
        self.title = title
        self.media = media
        self.content_type = content_type
        self.dims = dims or {}
        for s, data in sizes.items():
            if s not in self.dims:
                with Image.open(io.BytesIO(data)) as im:
                    self.dims[s] = im.size


class FlickrServer:
    def __init__(self, api_key: str = "test-key-0123456789", secret: str = "test-secret-abcdef",
                 latency: float = 0.0, image_delay: float = 0.0):
        self.api_key = api_key
        self.secret = secret
        self.latency = latency
        self.image_delay = image_delay
        self.photos: dict[str, Photo] = {}
        self.groups: dict[str, list[str]] = {}
        self.group_urls: dict[str, str] = {}
        self.faults: dict[tuple, list] = {}
        self.gone: set[str] = set()
        self.hang_s = 1.0  # how long a scripted "hang" stalls before answering normally
        self.delays: dict[str, float] = {}  # per photo id: overrides image_delay  # photo ids whose files answer 404 (deleted since listing)
        self.log: list[dict] = []
        self._lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    # ------------------------------------------------------------ content
    def add_photo(self, pid, sizes: dict, *, license: int = 4, owner: str = "12345@N01",
                  ownername: str = "Ann Spider", title: str = "", media: str = "photo",
                  content_type: str = "image/jpeg", dims: dict | None = None) -> Photo:
        ph = Photo(str(pid), sizes, license=license, owner=owner, ownername=ownername,
                   title=title or f"spider {pid}", media=media, content_type=content_type,
                   dims=dims)
        self.photos[ph.id] = ph
        return ph

    def add_group(self, gid: str, photo_ids: list, url: str | None = None) -> None:
        """The pool in Flickr's order; an id may appear twice (pages shifting while walked)."""
        self.groups[gid] = [str(x) for x in photo_ids]
        if url:
            self.group_urls[url.rstrip("/")] = gid

    def fail(self, kind: str, name: str, *actions) -> None:
        """Script faults for ("api", method) or ("img", photo id), consumed one per request."""
        with self._lock:
            self.faults.setdefault((kind, str(name)), []).extend(actions)

    def _next_fault(self, kind: str, name: str):
        with self._lock:
            q = self.faults.get((kind, name))
            return q.pop(0) if q else None

    def requests(self, kind: str | None = None, name: str | None = None) -> list[dict]:
        with self._lock:
            return [r for r in self.log if (kind is None or r["kind"] == kind)
                    and (name is None or r["name"] == name)]

    def image_gets(self) -> list[str]:
        """Photo ids of every image request, in arrival order."""
        return [r["name"] for r in self.requests("img")]

    # ------------------------------------------------------------ lifecycle
    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def rest_url(self) -> str:
        return self.base + "/services/rest/"

    def start(self) -> "FlickrServer":
        handler = type("Handler", (_Handler,), {"fs": self})
        self.httpd = _QuietServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), name="fake-flickr",
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------ API
    def photo_json(self, ph: Photo) -> dict:
        d = {"id": ph.id, "owner": ph.owner, "secret": "abc", "server": "1", "farm": 1,
             "title": ph.title, "ispublic": 1, "isfriend": 0, "isfamily": 0,
             "license": str(ph.license), "ownername": ph.ownername, "media": ph.media,
             "media_status": "ready", "pathalias": None}
        for s in ph.sizes:
            w, h = ph.dims[s]
            d[f"url_{s}"] = f"{self.base}/img/{ph.id}_{s}.jpg"
            d[f"width_{s}"] = w
            d[f"height_{s}"] = h
        if "o" in ph.dims:
            d["o_width"], d["o_height"] = (str(v) for v in ph.dims["o"])
        return d

    def page(self, ids: list[str], params: dict) -> dict:
        per_page = min(500, int(params.get("per_page", 100)))
        page = max(1, int(params.get("page", 1)))
        total = len(ids)
        pages = max(1, -(-total // per_page))
        chunk = ids[(page - 1) * per_page: page * per_page]
        return {"photos": {"page": page, "pages": pages, "perpage": per_page, "total": total,
                           "photo": [self.photo_json(self.photos[i]) for i in chunk]},
                "stat": "ok"}

    def api(self, method: str, params: dict) -> dict:
        if method == "flickr.urls.lookupGroup":
            gid = self.group_urls.get(params.get("url", "").rstrip("/"))
            if gid is None:
                return fail(1, "Group not found")
            return {"group": {"id": gid, "groupname": {"_content": "Spiders"}}, "stat": "ok"}
        if method == "flickr.groups.pools.getPhotos":
            ids = self.groups.get(params.get("group_id", ""))
            if ids is None:
                return fail(1, "Group not found")
            return self.page(ids, params)
        if method == "flickr.photos.search":
            lic = {int(x) for x in params.get("license", "").split(",") if x}
            text = params.get("text", "").lower()
            ids = [p.id for p in self.photos.values()
                   if (not lic or p.license in lic) and text in p.title.lower()
                   and p.media == "photo"]
            return self.page(ids, params)
        if method == "flickr.photos.licenses.getInfo":
            return {"licenses": {"license": LICENSES}, "stat": "ok"}
        return fail(112, f'Method "{method}" not found')

    def check_auth(self, http_method: str, uri: str, body_params: list, header: str) -> dict | None:
        """None when the OAuth signature is valid for our key and secret, else a fail reply."""
        if not header.startswith("OAuth "):
            return fail(100, "Invalid API Key (Key has invalid format)")
        oauth = dict(utils.parse_authorization_header(header))
        if oauth.get("oauth_consumer_key") != self.api_key:
            return fail(100, "Invalid API Key (Key not found)")
        params = signature.collect_parameters(body=body_params, headers={"Authorization": header},
                                              exclude_oauth_signature=True)
        base = signature.signature_base_string(http_method, signature.base_string_uri(uri),
                                               signature.normalize_parameters(params))
        key = (utils.escape(self.secret) + "&").encode()  # no token: empty token secret
        expected = base64.b64encode(hmac.new(key, base.encode(), hashlib.sha1).digest()).decode()
        if not signature.safe_string_equals(expected, utils.unescape(oauth.get("oauth_signature", ""))):
            return fail(96, "Invalid signature")
        return None


def fail(code: int, message: str) -> dict:
    return {"stat": "fail", "code": code, "message": message}


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a client that timed out or dropped us: expected in these tests


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as with the real servers
    # headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
    # delayed ACKs would add ~40 ms to every reply and swamp the latency being modelled
    disable_nagle_algorithm = True
    fs: FlickrServer

    def log_message(self, *args):  # quiet: the test log is self.fs.log
        pass

    def _record(self, kind: str, name: str, status) -> None:
        if getattr(self, "_hung", False):
            self._hung = False
            return
        with self.fs._lock:
            self.fs.log.append({"kind": kind, "name": name, "status": status, "t": time.time()})

    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _fault(self, kind: str, name: str, body: bytes, ctype: str) -> bool:
        action = self.fs._next_fault(kind, name)
        if action is None:
            return False
        self._record(kind, name, action)
        if action == "hang":  # answer only after the client's timeout has passed
            time.sleep(self.fs.hang_s)
            self._hung = True  # the late answer is not logged again
            return False
        if action == "drop":
            if kind == "img":
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        status = int(action)
        self._send(status, f"<html>{status}</html>".encode(), "text/html",
                   {"Retry-After": "0"} if status == 429 else None)
        return True

    def do_POST(self):
        if self.fs.latency:
            time.sleep(self.fs.latency)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8")
        body_params = parse_qsl(raw, keep_blank_values=True)
        params = dict(body_params)
        method = params.get("method", "")
        if urlsplit(self.path).path != "/services/rest/":
            self._record("api", method, 404)
            return self._send(404, b"not found", "text/plain")
        if self._fault("api", method, b"", "text/html"):
            return
        uri = f"http://{self.headers.get('Host')}{self.path}"
        reply = self.fs.check_auth("POST", uri, body_params, self.headers.get("Authorization", ""))
        if reply is None:
            reply = self.fs.api(method, params)
        self._record("api", method, reply.get("stat"))
        self._send(200, json.dumps(reply).encode(), "application/json")

    def do_GET(self):
        if self.fs.latency:
            time.sleep(self.fs.latency)
        path = urlsplit(self.path).path
        if not path.startswith("/img/"):
            self._record("other", path, 404)
            return self._send(404, b"not found", "text/plain")
        pid, _, rest = path[len("/img/"):].partition("_")
        size = rest.split(".")[0]
        ph = self.fs.photos.get(pid)
        if ph is None or size not in ph.sizes or pid in self.fs.gone:
            self._record("img", pid, 404)
            return self._send(404, b"<html>gone</html>", "text/html")
        body = ph.sizes[size]
        if self._fault("img", pid, body, ph.content_type):
            return
        self._record("img", pid, 200)
        delay = self.fs.delays.get(pid, self.fs.image_delay)
        if not delay:
            return self._send(200, body, ph.content_type)
        # trickle: half the body, a pause, the rest (a kill then lands mid-download)
        self.send_response(200)
        self.send_header("Content-Type", ph.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        time.sleep(delay)
        self.wfile.write(body[len(body) // 2:])
