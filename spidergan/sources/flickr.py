"""Flickr source: walk a group pool or a search and download the photos into `data/raw/`.

API calls go through the real `flickrapi.FlickrAPI` (OAuth-signed form POSTs, JSON replies),
pointed at `$FLICKR_REST_URL` when set (tests, API-compatible mirrors). The key and secret come
from `$FLICKR_API_KEY` and `$FLICKR_API_SECRET` only; they are never logged, put into an
exception message, a manifest or a metric (flickrapi sends them in the Authorization header,
and its own debug logging, which would show them, is held at WARNING).

Politeness and resilience: API calls pass a client-side rate limiter (Flickr allows 3,600 calls
an hour per key) and are retried with exponential backoff and jitter on 5xx, 429, timeouts and
dropped connections. Downloads run in a bounded thread pool, each photo with a bounded number of
tries, into a temporary file that is checked (length, full decode) before it is renamed into
place; a photo that still fails is recorded in rejects.jsonl as failed, with the last error.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Iterator

import requests

from spidergan import images
from spidergan.ingest import Ingest, ScrapeError, write_attribution
from spidergan.http import (Backoff, GaveUp, HTTPStatusError, RateLimiter, TransientError,
                            check_status, retry)
from spidergan.params import FlickrParams, ScrapeParams

log = logging.getLogger(__name__)

KEY_ENV = "FLICKR_API_KEY"
SECRET_ENV = "FLICKR_API_SECRET"
REST_URL_ENV = "FLICKR_REST_URL"
DEFAULT_REST_URL = "https://api.flickr.com/services/rest/"
KEY_HELP = ("get a key at https://www.flickr.com/services/apps/create/ and export "
            f"{KEY_ENV} and {SECRET_ENV}")

# Size suffixes as Flickr's `extras` name them, smallest first (longest side: z 640, c 800,
# l 1024, h 1600, k 2048, o original).
SIZES = ("z", "c", "l", "h", "k", "o")
EXTRAS = ",".join(["license", "owner_name", "o_dims", "media", "path_alias"]
                  + [f"url_{s}" for s in SIZES])

# Flickr's error codes that mean the key, secret or signature are wrong: retrying cannot help.
AUTH_CODES = {95, 96, 97, 98, 99, 100}
# "Service currently unavailable" and the search API being down: worth retrying.
TRANSIENT_CODES = {0, 10, 105, 106}

# flickr.photos.licenses.getInfo as of 2024; used when that call is not available.
LICENSES = {
    0: ("All Rights Reserved", ""),
    1: ("Attribution-NonCommercial-ShareAlike License",
        "https://creativecommons.org/licenses/by-nc-sa/2.0/"),
    2: ("Attribution-NonCommercial License", "https://creativecommons.org/licenses/by-nc/2.0/"),
    3: ("Attribution-NonCommercial-NoDerivs License",
        "https://creativecommons.org/licenses/by-nc-nd/2.0/"),
    4: ("Attribution License", "https://creativecommons.org/licenses/by/2.0/"),
    5: ("Attribution-ShareAlike License", "https://creativecommons.org/licenses/by-sa/2.0/"),
    6: ("Attribution-NoDerivs License", "https://creativecommons.org/licenses/by-nd/2.0/"),
    7: ("No known copyright restrictions", "https://www.flickr.com/commons/usage/"),
    8: ("United States Government Work", "http://www.usa.gov/copyright.shtml"),
    9: ("Public Domain Dedication (CC0)", "https://creativecommons.org/publicdomain/zero/1.0/"),
    10: ("Public Domain Mark", "https://creativecommons.org/publicdomain/mark/1.0/"),
}

MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024  # no honest photo at <= 16384 px is larger


class FlickrSetupError(ScrapeError):
    """The run cannot start: credentials missing or rejected, group unknown, bad query."""


class FlickrAPIError(ScrapeError):
    def __init__(self, method: str, code: int | None, message: str):
        super().__init__(f"{method} failed: Flickr error {code}: {message}")
        self.method = method
        self.code = code


# --------------------------------------------------------------------------- credentials
class Secrets:
    """The key and secret, and a redactor that blanks them out of any text."""

    def __init__(self, key: str, secret: str):
        self.key = key
        self.secret = secret

    def redact(self, text: str) -> str:
        for s in (self.key, self.secret):
            if s:
                text = text.replace(s, "***")
        return text

    def __repr__(self) -> str:  # never show the values, even in a traceback's locals
        return "Secrets(***)"


def credentials(environ=os.environ) -> Secrets:
    key = environ.get(KEY_ENV, "").strip()
    secret = environ.get(SECRET_ENV, "").strip()
    missing = [n for n, v in ((KEY_ENV, key), (SECRET_ENV, secret)) if not v]
    if missing:
        raise FlickrSetupError(f"scrape.source=flickr needs {' and '.join(missing)} in the "
                               f"environment; {KEY_HELP}")
    return Secrets(key, secret)


def _quiet_third_party_loggers() -> None:
    # oauthlib and requests_oauthlib log the signed parameters (with the key) at DEBUG
    for name in ("flickrapi", "oauthlib", "requests_oauthlib", "urllib3"):
        lg = logging.getLogger(name)
        if lg.getEffectiveLevel() < logging.WARNING:
            lg.setLevel(logging.WARNING)


# --------------------------------------------------------------------------- API client
class Client:
    """flickrapi with a rate limiter, retries and errors that never carry the secrets."""

    def __init__(self, secrets: Secrets, fp: FlickrParams, rest_url: str | None = None,
                 sleep=None):
        import flickrapi

        _quiet_third_party_loggers()
        self.secrets = secrets
        self.fp = fp
        self.rest_url = rest_url or os.environ.get(REST_URL_ENV) or DEFAULT_REST_URL
        self.limiter = RateLimiter(fp.calls_per_hour)
        self.backoff = Backoff(fp.backoff_s, fp.backoff_max_s)
        self._sleep = sleep
        self.calls = 0
        self.session = requests.Session()
        # raise on any non-2xx before flickrapi logs the reply body at ERROR
        self.session.hooks["response"].append(lambda r, *a, **k: check_status(r))
        # store_token=False: a memory-only token cache, so nothing is written under ~/.flickr
        api = flickrapi.FlickrAPI(secrets.key, secrets.secret, format="parsed-json",
                                  store_token=False, cache=False, timeout=fp.timeout_s)
        api.REST_URL = self.rest_url
        # flickrapi shares one class-level session between all instances; use our own
        api.flickr_oauth.session = self.session
        self._api = api

    def call(self, method: str, **params) -> dict:
        from flickrapi.exceptions import FlickrError

        def once():
            self.limiter.acquire()
            self.calls += 1
            try:
                return self._api.do_flickr_call(method, timeout=self.fp.timeout_s, **params)
            except FlickrError as e:
                msg = self.secrets.redact(str(e))
                if e.code in TRANSIENT_CODES:
                    raise TransientError(f"Flickr error {e.code}: {msg}") from None
                if e.code in AUTH_CODES:
                    raise FlickrSetupError(
                        f"Flickr rejected the API credentials ({msg}); check {KEY_ENV} and "
                        f"{SECRET_ENV} ({KEY_HELP})") from None
                raise FlickrAPIError(method, e.code, msg) from None
            except ValueError as e:  # a 200 reply that is not JSON (proxy page, mirror glitch)
                raise TransientError(f"reply is not JSON: {self.secrets.redact(str(e))[:200]}") \
                    from None

        kw = {"sleep": self._sleep} if self._sleep else {}
        try:
            return retry(once, max_tries=self.fp.max_tries, backoff=self.backoff,
                         describe=lambda e: self.secrets.redact(f"{type(e).__name__}: {e}"),
                         on_retry=lambda n, e: log.info("%s: try %d failed (%s), retrying",
                                                        method, n, self._describe(e)), **kw)
        except GaveUp as e:
            raise FlickrSetupError(f"{method}: Flickr API unreachable at {self._where()} "
                                   f"({e})") from None
        except HTTPStatusError as e:
            raise FlickrSetupError(f"{method}: Flickr API at {self._where()} answered "
                                   f"{e}") from None

    def _describe(self, e: BaseException) -> str:
        return self.secrets.redact(f"{type(e).__name__}: {e}")

    def _where(self) -> str:
        return self.rest_url.split("?")[0]

    def close(self) -> None:
        self.session.close()


# --------------------------------------------------------------------------- listing
GROUP_ID_RE = re.compile(r"^\d+@N\d+$")


def resolve_group(client: Client, group: str) -> str:
    """A group id from an id (12345678@N00), a group URL, or a group path alias."""
    group = group.strip()
    if GROUP_ID_RE.match(group):
        return group
    url = group if "://" in group or group.startswith("www.") or group.startswith("flickr.com") \
        else f"https://www.flickr.com/groups/{group.strip('/')}/"
    if not url.startswith("http"):
        url = "https://" + url
    try:
        rsp = client.call("flickr.urls.lookupGroup", url=url)
    except FlickrAPIError as e:
        raise FlickrSetupError(f"Flickr group {group!r} not found ({e})") from None
    return rsp["group"]["id"]


def licenses(client: Client) -> dict[int, tuple[str, str]]:
    """Licence id -> (name, url), from flickr.photos.licenses.getInfo, else the built-in table."""
    table = dict(LICENSES)
    try:
        rsp = client.call("flickr.photos.licenses.getInfo")
        for lic in rsp["licenses"]["license"]:
            table[int(lic["id"])] = (lic.get("name", ""), lic.get("url", ""))
    except (ScrapeError, KeyError, TypeError, ValueError) as e:
        # not fatal: names only label the attribution; a bad key fails the listing anyway
        log.warning("licence names from the built-in table (%s)", e)
    return table


def iter_photos(client: Client, fp: FlickrParams, group_id: str | None,
                stats: dict | None = None) -> Iterator[dict]:
    """Photo records of the pool or search, page by page, in Flickr's order, duplicates dropped.

    Flickr's pages shift while photos are added, so one photo can appear on two pages; ids are
    deduplicated here. `stats["total"]` receives the total the first page announces.
    """
    if group_id:
        method = "flickr.groups.pools.getPhotos"
        base = {"group_id": group_id}
    else:
        method = "flickr.photos.search"
        base = {"media": "photos", "content_type": 1, "sort": "date-posted-asc",
                "license": ",".join(str(x) for x in fp.licenses)}
        for k in ("text", "tags", "bbox", "min_taken_date", "max_taken_date"):
            v = getattr(fp, k)
            if v:
                base[k] = v
        if fp.tags:
            base["tag_mode"] = fp.tag_mode
    seen: set[str] = set()
    page = 1
    while True:
        try:
            rsp = client.call(method, extras=EXTRAS, per_page=fp.per_page, page=page, **base)
        except FlickrAPIError as e:
            if page == 1:
                what = f"group {group_id}" if group_id else "search"
                raise FlickrSetupError(f"cannot list {what}: {e}") from None
            raise
        photos = rsp.get("photos") or {}
        if stats is not None and page == 1:
            stats["total"] = int(photos.get("total") or 0)
        batch = photos.get("photo") or []
        for ph in batch:
            pid = str(ph.get("id"))
            if pid in seen:
                continue
            seen.add(pid)
            yield ph
        pages = int(photos.get("pages") or 0)
        if not batch or page >= pages:
            return
        page += 1


def choose_size(ph: dict, max_side: int) -> tuple[str, str, int, int] | None:
    """(suffix, url, width, height) of the largest size whose longer side is <= max_side; the
    smallest size when all are larger; None when the record lists no size URL."""
    sizes = []
    for s in SIZES:
        url = ph.get(f"url_{s}")
        if not url:
            continue
        try:
            w, h = int(ph.get(f"width_{s}") or 0), int(ph.get(f"height_{s}") or 0)
        except (TypeError, ValueError):
            w = h = 0
        sizes.append((max(w, h), s, url, w, h))
    if not sizes:
        return None
    sizes.sort()
    fitting = [x for x in sizes if 0 < x[0] <= max_side]
    _, s, url, w, h = fitting[-1] if fitting else sizes[0]
    return s, url, w, h


def provenance(ph: dict, size: tuple, lic_table: dict) -> dict:
    lic = int(ph.get("license", -1))
    name, url = lic_table.get(lic, ("unknown", ""))
    owner = str(ph.get("owner", ""))
    return {
        "photo_id": str(ph["id"]),
        "owner": owner,
        "owner_name": ph.get("ownername", ""),
        "title": ph.get("title", ""),
        "license": lic,
        "license_name": name,
        "license_url": url,
        "page_url": f"https://www.flickr.com/photos/{ph.get('pathalias') or owner}/{ph['id']}/",
        "source_url": size[1],
        "size": size[0],
        "original_dims": [int(ph["o_width"]), int(ph["o_height"])]
        if ph.get("o_width") and ph.get("o_height") else None,
    }


# --------------------------------------------------------------------------- downloading
class Downloader:
    """One GET per try into a temporary file; thread-local sessions (connection reuse)."""

    def __init__(self, fp: FlickrParams, sleep=None):
        self.fp = fp
        self.backoff = Backoff(fp.backoff_s, fp.backoff_max_s)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._sleep = sleep

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            self._local.session = s
            with self._lock:
                self._sessions.append(s)
        return s

    def fetch(self, url: str, tmp: Path) -> bytes:
        """The body of `url`, also left in `tmp`; raises GaveUp or HTTPStatusError."""

        def once() -> bytes:
            n = 0
            with self._session().get(url, stream=True, timeout=self.fp.timeout_s) as r:
                check_status(r)
                with open(tmp, "wb") as f:
                    for chunk in r.iter_content(1 << 16):
                        n += len(chunk)
                        if n > MAX_DOWNLOAD_BYTES:
                            raise images.ImageRejected("too_large",
                                                       f"more than {MAX_DOWNLOAD_BYTES} bytes")
                        f.write(chunk)
                expected = r.headers.get("Content-Length")
                if expected and not r.headers.get("Content-Encoding") and int(expected) != n:
                    raise TransientError(f"short body: {n} of {expected} bytes")
            return tmp.read_bytes()

        kw = {"sleep": self._sleep} if self._sleep else {}
        return retry(once, max_tries=self.fp.max_tries, backoff=self.backoff, **kw)

    def close(self) -> None:
        for s in self._sessions:
            s.close()


class _Licences:
    """The licence table, fetched in the background; `get` waits for it on first use."""

    def __init__(self, future: Future):
        self._future = future

    def get(self, lic: int, default=None):
        return self._future.result().get(lic, default)


class _Done:
    """A decision made without a download (reuse, skip), recorded like a finished download.
    `eligible`: it counts toward `limit` (an image kept or known bad, not a filtered one)."""

    def __init__(self, fn, eligible: bool):
        self.fn = fn
        self.eligible = eligible


def run(p: ScrapeParams, out: Path, sleep=None) -> dict:
    """The Flickr source into `out` (see spidergan.scrape for the layout and resume rules)."""
    fp = p.flickr
    secrets = credentials()
    client = Client(secrets, fp, sleep=sleep)
    pool = ThreadPoolExecutor(max_workers=fp.concurrency, thread_name_prefix="flickr-dl")
    try:
        group_id = resolve_group(client, fp.group) if fp.group else None
        # the licence names arrive while the first page is listed
        lic_table = _Licences(pool.submit(licenses, client))
        allowed = set(fp.licenses)
        ing = Ingest(out, p, "flickr", desc="scrape flickr")
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        client.close()
        raise
    dl = Downloader(fp, sleep=sleep)
    window: list = []  # decided or in flight, not yet recorded
    stats: dict = {}

    def work(item_id: str, url: str):
        """In a worker thread: download, validate, store.

        Returns (kind, payload, detail, downloaded): kind "ok" with the Stored record, or
        "rejected"/"failed" with a reason and detail."""
        tmp = ing.temp_path(item_id)
        try:
            data = dl.fetch(url, tmp)
        except Exception as e:  # noqa: BLE001 - every failure becomes a record, the run goes on
            if tmp.exists():
                tmp.unlink()
            if isinstance(e, GaveUp):
                return "failed", "download_failed", secrets.redact(
                    f"{e.reason} ({e.tries} tries)"), False
            if isinstance(e, images.ImageRejected):
                return "rejected", e.reason, e.detail, False
            return "failed", "download_failed", secrets.redact(f"{type(e).__name__}: {e}"), False
        try:
            return "ok", ing.store(item_id, data, tmp=tmp), "", True
        except images.ImageRejected as e:
            return "rejected", e.reason, e.detail, True

    def emit(entry) -> None:
        item_id, ph, size, task = entry
        if isinstance(task, _Done):
            task.fn()
            return
        res = task.result()
        key = size[1]
        if res[3]:
            ing.counts["downloaded"] += 1
        if res[0] == "ok":
            pv = provenance(ph, size, lic_table)
            pv["source_sha256"] = res[1].source_sha256  # differs from sha256 when re-encoded
            ing.accept(item_id, res[1], pv)
        else:
            ing.reject(item_id, res[1], res[2], kind=res[0],
                       key=key if res[0] == "rejected" else None)

    eligible = 0
    try:
        for ph in iter_photos(client, fp, group_id, stats):
            if ing.bar.total is None and stats.get("total") is not None:
                ing.bar.total = min(stats["total"], fp.limit)
                ing.bar.refresh()
            item_id = f"flickr-{ph['id']}"
            if not ing.listed(item_id):
                continue
            entry = _decide(ing, ph, item_id, fp, p.min_side, allowed, lic_table)
            if entry is None:
                size = choose_size(ph, fp.max_side)
                entry = (item_id, ph, size, pool.submit(work, item_id, size[1]))
            if isinstance(entry[3], Future) or entry[3].eligible:
                eligible += 1
            window.append(entry)
            _emit_ready(window, emit, block=len(window) > 4 * fp.concurrency)
            if eligible >= fp.limit:
                break
        while window:
            _emit_ready(window, emit, block=True)
    except BaseException:
        # keep what finished (the next run then skips it), cancel what has not started
        pool.shutdown(wait=True, cancel_futures=True)
        try:
            for e in window:
                if isinstance(e[3], _Done) or (e[3].done() and not e[3].cancelled()):
                    emit(e)
        finally:
            ing.close()
            dl.close()
            client.close()
        raise
    pool.shutdown(wait=True)
    dl.close()
    client.close()
    counts = ing.finish()
    counts["api_calls"] = client.calls
    write_attribution(out, ing.records())
    return counts


def _ready(entry) -> bool:
    task = entry[3]
    return isinstance(task, _Done) or task.done()


def _emit_ready(window: list, emit, block: bool) -> None:
    """Record every finished entry now (a kill then loses only photos still in flight); with
    `block`, first wait until at least one has finished. The manifest's final order comes from
    the listing (Ingest.finish), not from this completion order."""
    if block and window and not any(_ready(e) for e in window):
        wait([e[3] for e in window], return_when=FIRST_COMPLETED)
    keep = []
    for e in window:
        if _ready(e):
            emit(e)
        else:
            keep.append(e)
    window[:] = keep


def _decide(ing, ph: dict, item_id: str, fp: FlickrParams, min_side: int, allowed: set,
            lic_table: dict):
    """The entry for a photo that needs no download (filtered, reused, known bad), else None."""
    done = _Done
    if ph.get("media", "photo") != "photo":
        return item_id, ph, None, done(
            lambda: ing.reject(item_id, "not_a_photo", f"media={ph.get('media')}",
                               kind="skipped"), False)
    lic = int(ph.get("license", -1))
    if lic not in allowed:
        name = lic_table.get(lic, ("unknown", ""))[0]
        return item_id, ph, None, done(
            lambda: ing.reject(item_id, "license", f"licence {lic} ({name}) not in "
                               f"scrape.flickr.licenses", kind="skipped"), False)
    size = choose_size(ph, fp.max_side)
    if size is None:
        return item_id, ph, None, done(
            lambda: ing.reject(item_id, "no_url", "no downloadable size listed",
                               kind="skipped"), False)
    _, url, w, h = size
    if w and h and min(w, h) < min_side:
        return item_id, ph, size, done(
            lambda: ing.reject(item_id, "too_small",
                               f"{w}x{h} ({size[0]}) below min_side {min_side}",
                               kind="skipped"), False)
    prev = ing.reusable(item_id, "source_url", url)
    if prev is not None:
        pv = provenance(ph, size, lic_table)  # fresh metadata (title, owner name may change)
        pv["source_sha256"] = prev["provenance"].get("source_sha256")
        rec = dict(prev, provenance=pv)
        return item_id, ph, size, done(lambda: ing.accept(item_id, None, pv, reused=True,
                                                          record=rec), True)
    bad = ing.previous_reject(item_id, url)
    if bad is not None:
        return item_id, ph, size, done(
            lambda: ing.reject(item_id, bad["reason"], bad.get("detail", ""),
                               kind="rejected", key=url), True)
    return None
