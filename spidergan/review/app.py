"""The review server: a small FastAPI app serving one static page, a JSON API and thumbnails.

Safety, for a server that writes files and shows a whole folder of photos:

* binds 127.0.0.1 unless told otherwise, and answers only requests whose Host header names the
  bound host or loopback (a DNS-rebinding page cannot read the token off the index page);
* every request that changes state must carry the per-server-session token (random, embedded in
  the page) in the `X-Review-Token` header, else 403;
* images are served by manifest id only; the manifest's path is resolved and refused unless it
  is an image inside `data/` or `models/` (no request ever names a file path);
* the page is self-contained (no CDN), with a strict Content-Security-Policy.

State lives in the decisions file, not in the page: every tab reads it from the server and polls
its version, so two tabs see the same decisions.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import sys
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from spidergan import env
from spidergan.images import ImageRejected
from spidergan.review import decisions as dec
from spidergan.review import thumbs
from spidergan.review.data import STATUSES, ReviewData

STATIC = Path(__file__).with_name("static")
TOKEN_HEADER = "x-review-token"
MAX_PER_PAGE = 500
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def _host_name(host_header: str) -> str:
    """Host header without its port: 'h:1', '[::1]:1', 'h'."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def create_app(root: str | Path, data: str | Path = "data", *, host: str = "127.0.0.1",
               token: str | None = None) -> FastAPI:
    """The review app for the project at `root` (its data in `root/data`)."""
    rd = ReviewData(root, data)
    log = dec.DecisionLog(rd.decisions_path)
    thumb_dir = env.state_dir(rd.root) / "thumbs"
    token = token or secrets.token_urlsafe(32)
    allowed_hosts = None if _is_wildcard(host) else LOOPBACK_NAMES | {host.lower()}

    app = FastAPI(title="SpiderGAN review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.token, app.state.data, app.state.log = token, rd, log

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if allowed_hosts is not None and _host_name(request.headers.get("host", "")) not in allowed_hosts:
            return JSONResponse({"error": "unexpected Host header"}, status_code=421)
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            sent = request.headers.get(TOKEN_HEADER, "")
            if not secrets.compare_digest(sent.encode(), token.encode()):
                return JSONResponse({"error": "missing or wrong session token"}, status_code=403)
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    index_html = (STATIC / "index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    def index():
        return HTMLResponse(index_html.replace("__TOKEN__", token),
                            headers={"Cache-Control": "no-store"})

    @app.get("/favicon.ico")
    def favicon():
        return Response(status_code=204)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # ------------------------------------------------------------------ listing
    def _listing(kind: str, status: str, min_conf, max_conf, start: int, per_page: int, q: str = ""):
        if status not in STATUSES[kind]:
            return JSONResponse({"error": f"status must be one of {', '.join(STATUSES[kind])}"},
                                status_code=400)
        fn = {"detection": rd.list_detections, "crop": rd.list_crops, "pair": rd.list_pairs}[kind]
        version = log.version()
        kw = {"q": q} if kind != "pair" else {}
        out = fn(log.snapshot(), status=status, min_conf=min_conf, max_conf=max_conf,
                 start=start, per_page=per_page, **kw)
        out.update(kind=kind, version=version, per_page=per_page)
        return out

    def _list_route(path: str, kind: str):
        @app.get(path)
        def listing(status: str = "all", min_conf: float | None = Query(None, ge=0, le=1),
                    max_conf: float | None = Query(None, ge=0, le=1), start: int = Query(0, ge=0),
                    per_page: int = Query(200, ge=1, le=MAX_PER_PAGE),
                    q: str = Query("", max_length=200)):
            return _listing(kind, status, min_conf, max_conf, start, per_page, q)

    _list_route("/api/detections", "detection")
    _list_route("/api/crops", "crop")
    _list_route("/api/pairs", "pair")

    @app.get("/api/version")
    def version():
        return {"version": log.version()}

    # ------------------------------------------------------------------ deciding
    @app.post("/api/decide")
    async def decide(request: Request):
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "body must be JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        return await run_in_threadpool(_decide, body)  # fsync and file reads off the event loop

    def _decide(body: dict):
        kind, key, decision = body.get("kind"), body.get("key"), body.get("decision")
        rec = {"kind": kind, "key": key, "decision": decision}
        if body.get("undo"):
            rec["undo"] = True
        if kind == "detection" and isinstance(key, str):
            image_id, _, idx = key.rpartition(":")
            got = rd.detection_images()
            item = got[1].get(image_id) if got else None
            if item is None or not idx.isdigit() or int(idx) >= len(item["boxes"]):
                return JSONResponse({"error": f"no detected box {key!r}"}, status_code=404)
            orig = item["boxes"][int(idx)]["box"]
            current = rd.fresh_detection(log.get("detection", key), item["boxes"][int(idx)])
            box = body.get("box") or (current["box"] if current else orig)
            if isinstance(box, list) and len(box) == 4 and item["w"] and item["h"] and \
                    all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
                w, h = item["w"], item["h"]  # a dragged box stays on the image
                box = [min(max(box[0], 0), w), min(max(box[1], 0), h), min(max(box[2], 0), w), min(max(box[3], 0), h)]
            rec.update(image_id=image_id, orig_box=orig, box=box)
        elif kind == "image" and isinstance(key, str):  # "no spider in this image"
            if rd.raw_file(key) is None:
                return JSONResponse({"error": f"no raw image {key!r}"}, status_code=404)
            rec["image_id"] = key
        elif kind == "crop" and isinstance(key, str):
            if key not in (rd.crops() or {}):
                return JSONResponse({"error": f"no crop {key!r}"}, status_code=404)
            rec["id"] = key
        elif kind == "pair" and isinstance(key, str):
            pair = next((p for p in rd.pairs() or [] if p["fake"] == key), None)
            if pair is None:
                return JSONResponse({"error": f"no pair {key!r}"}, status_code=404)
            rec.update(fake=key, real=pair["real"], distance=pair.get("distance"))
        try:
            saved, before, version = log.append(rec)
        except dec.DecisionError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        return {"record": saved, "before": before, "version": version}

    # ------------------------------------------------------------------ images by id
    def _image(path: Path | None, size: int, request: Request):
        if path is None:
            return JSONResponse({"error": "no such image"}, status_code=404)
        try:
            thumb, key = thumbs.thumbnail(path, size, thumb_dir)
        except ImageRejected as e:
            return JSONResponse({"error": f"image does not decode: {e.reason}"}, status_code=422)
        etag = f'"{key}"'
        headers = {"ETag": etag, "Cache-Control": "no-cache"}  # revalidate: 304 while unchanged
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return FileResponse(thumb, media_type="image/jpeg", headers=headers)

    @app.get("/img/raw")
    def raw_image(request: Request, id: str, s: int = Query(256, ge=16, le=4096)):
        return _image(rd.raw_file(id), s, request)

    @app.get("/img/crop")
    def crop_image(request: Request, id: str, s: int = Query(256, ge=16, le=4096)):
        return _image(rd.crop_file(id), s, request)

    @app.get("/img/pair")
    def pair_image(request: Request, n: int, side: str, s: int = Query(256, ge=16, le=4096)):
        return _image(rd.pair_file(n, side), s, request)

    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(root: str | Path, data: str | Path = "data", host: str = "127.0.0.1",
          port: int = 8765) -> None:
    """Run the review server until interrupted (`spidergan review`)."""
    import uvicorn

    app = create_app(root, data, host=host)
    sock = bind(host, port)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        print(f"warning: serving on {host}: anyone who can reach this address can see the "
              "photos (decisions still need the page's token)", file=sys.stderr)
    print(f"review: {url_of(sock)}  (decisions -> {app.state.data.decisions_path}; Ctrl-C stops)",
          flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        app.state.log.close()
        sock.close()
