"""Planetary Computer URL signing: a SAS token per collection from the token endpoint, cached until it
expires and appended to the asset hrefs (what the ``planetary-computer`` package's ``sign()`` does).

Written here with ``requests`` so that the token URL can point at any server (tests run a local one) and
so that the optional subscription key (env ``PC_SDK_SUBSCRIPTION_KEY``) goes only into a request header.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from dataclasses import dataclass, field
from typing import Callable

from ..errors import CropmapError
from .http import redact

PC_TOKEN_URL = "https://planetarycomputer.microsoft.com/api/sas/v1/token"
KEY_ENV = "PC_SDK_SUBSCRIPTION_KEY"
KEY_HEADER = "Ocp-Apim-Subscription-Key"
# refresh a little before the stated expiry: a date's reads take seconds to minutes after signing
MARGIN = dt.timedelta(seconds=60)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class SasSigner:
    """``sign(href)`` -> ``href`` with the collection's SAS token as its query string.

    One token per collection is fetched from ``{token_url}/{collection}`` (JSON ``token``, ``msft:expiry``)
    and reused until ``MARGIN`` before its expiry. Thread-safe: dates may be read in parallel.
    """

    collection: str
    token_url: str = PC_TOKEN_URL
    timeout: float = 30.0
    now: Callable[[], dt.datetime] = _utcnow
    fetches: int = 0  # tokens fetched so far (the cache's effect, visible to tests and logs)
    _token: str | None = field(default=None, repr=False)
    _expiry: dt.datetime | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __getstate__(self) -> dict:  # picklable for Dask workers: the lock stays behind
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._expiry is None or self.now() >= self._expiry - MARGIN:
                self._token, self._expiry = self._fetch()
                self.fetches += 1
            return self._token

    def sign(self, href: str) -> str:
        if not href.startswith(("http://", "https://")):
            return href  # local files (tests, mirrors) need no token
        sep = "&" if "?" in href else "?"
        return f"{href}{sep}{self.token()}"

    def _fetch(self) -> tuple[str, dt.datetime]:
        import requests

        url = f"{self.token_url.rstrip('/')}/{self.collection}"
        key = os.environ.get(KEY_ENV)
        headers = {KEY_HEADER: key} if key else {}
        where = redact(url)
        try:
            r = requests.get(url, headers=headers, timeout=self.timeout)
        except requests.RequestException as e:
            raise CropmapError(f"{where}: no SAS token ({type(e).__name__}: network down or wrong token URL)") from None
        if r.status_code != 200:
            hint = f" (check ${KEY_ENV})" if r.status_code in (401, 403) and key else ""
            raise CropmapError(f"{where}: no SAS token (HTTP {r.status_code} {r.reason}){hint}")
        try:
            body = r.json()
            token = str(body["token"]).lstrip("?")
            expiry = dt.datetime.fromisoformat(str(body["msft:expiry"]).replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError):
            raise CropmapError(f"{where}: answer is not a SAS token (expected JSON with token and msft:expiry)") from None
        if expiry.tzinfo is None:
            expiry = expiry.replace(tzinfo=dt.timezone.utc)
        return token, expiry
