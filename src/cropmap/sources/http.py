"""HTTP for every source: HTTPS-only downloads resumed with HTTP Range, JSON requests with retries,
back-off and a rate limit, and URLs redacted (no user, password or query string) wherever they are shown."""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..errors import CropmapError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def default_cache() -> Path:
    return Path(os.environ.get("CROPMAP_CACHE") or Path.home() / ".cache" / "cropmap")


def redact(url: str) -> str:
    """``url`` without user:password and query string, safe to log (signed URLs carry tokens there)."""
    u = urllib.parse.urlsplit(url)
    if not u.scheme or not u.netloc:  # a path, or a GDAL path holding a URL: /vsicurl/https://…
        return redact_text(url)
    host = u.hostname or ""
    if u.port:
        host += f":{u.port}"
    return urllib.parse.urlunsplit((u.scheme, host, u.path, "", ""))


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()]+")


def redact_text(text: str) -> str:
    """``text`` (e.g. a GDAL or HTTP error message) with every URL in it redacted."""
    return _URL_IN_TEXT.sub(lambda m: redact(m.group(0)), text)


def is_url(s: str) -> bool:
    return urllib.parse.urlsplit(s).scheme.lower() in ("http", "https")


def check_scheme(url: str, allow_http: bool) -> None:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "https" or (scheme == "http" and allow_http):
        return
    raise CropmapError(f"{redact(url)}: only https:// downloads are allowed"
                       + (" (pass --allow-http to accept plain http)" if scheme == "http" else ""))


class Retryable(Exception):
    """A transient failure: the server or the connection may do better on the next try."""


def opener_for(allow_http: bool) -> urllib.request.OpenerDirector:
    class NoDowngrade(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            check_scheme(newurl, allow_http)  # an https -> http redirect must not slip through
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return urllib.request.build_opener(NoDowngrade)


def download(url: str, dest: Path, *, allow_http: bool = False, retries: int = 5, backoff: float = 2.0,
             timeout: float = 60.0) -> int:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming it with HTTP Range; return bytes received.

    Connection errors, truncated bodies, HTTP 429 and 5xx are retried ``retries`` times, waiting
    ``backoff * 2**attempt`` seconds; other HTTP errors fail at once.
    """
    check_scheme(url, allow_http)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    opener = opener_for(allow_http)
    received = 0
    for attempt in range(retries + 1):
        try:
            received += _transfer(opener, url, part, timeout)
            os.replace(part, dest)
            return received
        except Retryable as e:
            if attempt == retries:
                raise CropmapError(f"{redact(url)}: download failed after {retries + 1} tries ({redact_text(str(e))}); "
                                   f"run again to resume from {part}") from None
            wait = backoff * 2**attempt
            log.warning("%s: %s; retrying in %.1f s", redact(url), redact_text(str(e)), wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def _transfer(opener: urllib.request.OpenerDirector, url: str, part: Path, timeout: float) -> int:
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "cropmap", **({"Range": f"bytes={have}-"} if have else {})}
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = opener.open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left past our offset: the .part is already whole
            return 0
        if e.code == 429 or e.code >= 500:
            raise Retryable(f"HTTP {e.code}") from None
        raise CropmapError(f"{redact(url)}: HTTP {e.code} {e.reason}"
                           + (" (not published there? check the URL)" if e.code == 404 else "")) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise Retryable(f"{getattr(e, 'reason', e)}") from None
    with resp:
        if resp.status == 206:
            start = int(resp.headers.get("Content-Range", "bytes 0-").split()[1].split("-")[0])
            if start != have:
                raise Retryable(f"server resumed at byte {start}, expected {have}")
            mode = "ab"
        else:  # the server ignored the Range header: start over
            have, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        got = 0
        with open(part, mode) as f:
            try:
                while chunk := resp.read(_CHUNK):
                    f.write(chunk)
                    got += len(chunk)
            except (OSError, http.client.HTTPException) as e:  # IncompleteRead is not an OSError
                raise Retryable(f"connection lost after {have + got} bytes ({type(e).__name__})") from None
    if expected is not None and got < expected:
        raise Retryable(f"connection lost after {have + got} bytes")
    return got


def check_sha256(path: Path, sha256: str) -> None:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    if h.hexdigest().lower() != sha256.strip().lower():
        raise CropmapError(f"{path}: SHA-256 {h.hexdigest()} does not match the expected {sha256.strip()}")


def check_resolves(url: str) -> None:
    """A one-line error when ``url``'s host does not resolve twice in a row (no network, or a wrong URL), before a
    client spends minutes retrying with back-off."""
    host = urllib.parse.urlsplit(url).hostname
    if not host:
        return
    for attempt in range(2):
        try:
            socket.getaddrinfo(host, None)
            return
        except socket.gaierror as e:
            if attempt == 1:
                raise CropmapError(f"{redact(url)}: cannot resolve the host ({e}); check the network or the URL"
                                   ) from None
            time.sleep(1.0)


class RateLimit:
    """At most ``per_second`` calls of :meth:`wait` per second, across threads (the Géoplateforme allows ~30/s)."""

    def __init__(self, per_second: float):
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            delay = self._next - now
            self._next = max(now, self._next) + self.interval
        if delay > 0:
            time.sleep(delay)


def get_bytes(url: str, params: dict | None = None, *, allow_http: bool = False, retries: int = 5,
              backoff: float = 2.0, timeout: float = 60.0, rate: RateLimit | None = None,
              accept: str = "*/*") -> bytes:
    """GET ``url?params`` and return its body. HTTP 429 and 5xx and connection errors are retried ``retries``
    times, waiting ``backoff * 2**attempt`` seconds (or the server's ``Retry-After``); other HTTP errors fail
    at once with one line."""
    check_scheme(url, allow_http)
    full = url + ("&" if "?" in url else "?") + urllib.parse.urlencode(params) if params else url
    opener = opener_for(allow_http)
    for attempt in range(retries + 1):
        if rate is not None:
            rate.wait()
        wait = backoff * 2**attempt
        try:
            # some servers (the Géoplateforme feed) refuse urllib's default User-Agent
            req = urllib.request.Request(full, headers={"User-Agent": "cropmap", "Accept": accept})
            with opener.open(req, timeout=timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as e:
            if not (e.code == 429 or e.code >= 500):
                detail = " ".join(redact_text(e.read()[:300].decode("utf-8", "replace")).split())
                raise CropmapError(f"{redact(url)}: HTTP {e.code} {e.reason}" + (f" ({detail})" if detail else "")
                                   ) from None
            retry_after = (e.headers.get("Retry-After") or "").strip()
            if retry_after.isdigit():
                wait = max(wait, float(retry_after))
            err = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            err = f"{getattr(e, 'reason', e)}"
            if isinstance(getattr(e, "reason", e), socket.gaierror) and attempt >= 1:
                # the host name does not resolve twice in a row: no network, or a wrong URL; say so now
                raise CropmapError(f"{redact(url)}: cannot resolve the host ({redact_text(err)}); check the network "
                                   "or the URL") from None
        if attempt == retries:
            raise CropmapError(f"{redact(url)}: request failed after {retries + 1} tries ({redact_text(err)})")
        log.warning("%s: %s; retrying in %.1f s", redact(url), redact_text(err), wait)
        time.sleep(wait)
    raise AssertionError("unreachable")


def get_json(url: str, params: dict | None = None, **kw) -> dict:
    """:func:`get_bytes` parsed as JSON; a body that is not JSON is one line naming the URL."""
    body = get_bytes(url, params, accept="application/json", **kw)
    try:
        return json.loads(body)
    except ValueError:
        raise CropmapError(f"{redact(url)}: the answer is not JSON ({body[:80]!r})") from None
