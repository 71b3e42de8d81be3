"""Which RPG edition of a year can be had, and where: the Géoplateforme's Atom feed of RPG resources first,
a table of the archive names known to us second, and the WFS layer of each year.

IGN publishes each edition as a 7z archive (sometimes split into volumes ``.7z.001``, ``.7z.002``, …) under
``https://data.geopf.fr/telechargement/download/RPG/{resource}/{file}``, nationally (zone ``FXX``, ``FR``)
and per region (zone ``R11`` … ``R94``; about 20 times smaller). Resource names change between
products (RPG 2.0 for 2015–2022, 2.2 for 2023, 3.0 for 2024, 4.0 for 2025) and even within one
(``RPG_2-0_GPKG_LAMB93_FR-2019`` has a single underscore), so names are read from the feed when it
answers, and the table below is the fallback, each entry with how far it is known.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..errors import CropmapError
from .http import RateLimit, get_bytes, redact

log = logging.getLogger(__name__)

DOWNLOAD_ROOT = "https://data.geopf.fr/telechargement/download/RPG"
FEED_URL = "https://data.geopf.fr/telechargement/resource/RPG"
WFS_URL = "https://data.geopf.fr/wfs/ows"
YEARS = range(2015, 2026)
WFS_YEARS = range(2015, 2025)  # RPG.{year}:parcelles_graphiques on the Géoplateforme WFS (2025: not yet)
_ATOM = "{http://www.w3.org/2005/Atom}"
_GPF = "{https://data.geopf.fr/annexes/ressources/xsd/gpf_dl.xsd}"
_VOLUME = re.compile(r"\.7z(\.\d{3})?$", re.IGNORECASE)
MAX_FEED_PAGES = 100


@dataclass(frozen=True)
class Edition:
    """One downloadable archive: ``resource`` (the folder under :data:`DOWNLOAD_ROOT`) and its ``files`` in
    order (one ``.7z``, or every volume ``.7z.001`` … of a split one, never a guess); ``known`` says where
    the names come from."""

    year: int
    zone: str  # FXX / FR (national) or Rnn (a region)
    resource: str
    files: tuple[str, ...]
    known: str  # "feed", or how the table entry was established
    base: str = ""  # the folder URL of the files (default: DOWNLOAD_ROOT/resource)

    @property
    def urls(self) -> list[str]:
        base = self.base or f"{DOWNLOAD_ROOT}/{self.resource}"
        return [f"{base}/{f}" for f in self.files]

    @property
    def shapefile(self) -> bool:
        return "_SHP_" in self.resource.upper()


def _vols(name: str, n: int) -> tuple[str, ...]:
    return tuple(f"{name}.7z.{i:03d}" for i in range(1, n + 1))


# National GeoPackage (or, before 2019, shapefile) archives. Names as published in download links of public
# converters (fiboa-cli's FR converter, checked against the feed by its authors) and as reported in our
# issue tracker; none could be checked from here (no internet). 2015, 2016 and 2018 have no national archive
# that we know of: the feed or the WFS serves them.
NATIONAL: dict[int, Edition] = {e.year: e for e in (
    Edition(2017, "FR", "RPG_2-0__SHP_LAMB93_FR-2017_2017-01-01",
            ("RPG_2-0__SHP_LAMB93_FR-2017_2017-01-01.7z",), "published link (fiboa-cli)"),
    Edition(2019, "FR", "RPG_2-0_GPKG_LAMB93_FR-2019", ("RPG_2-0_GPKG_LAMB93_FR-2019.7z",),
            "published link (fiboa-cli)"),
    Edition(2020, "FR", "RPG_2-0__GPKG_LAMB93_FR_2020-01-01",
            _vols("RPG_2-0__GPKG_LAMB93_FR_2020-01-01", 2), "published links (fiboa-cli)"),
    Edition(2021, "FXX", "RPG_2-0__GPKG_LAMB93_FXX_2021-01-01",
            ("RPG_2-0__GPKG_LAMB93_FXX_2021-01-01.7z",), "published link (fiboa-cli)"),
    Edition(2022, "FXX", "RPG_2-0__GPKG_LAMB93_FXX_2022-01-01",
            _vols("RPG_2-0__GPKG_LAMB93_FXX_2022-01-01", 1), "published link (fiboa-cli)"),
    Edition(2023, "FXX", "RPG_2-2__GPKG_LAMB93_FXX_2023-01-01",
            ("RPG_2-2__GPKG_LAMB93_FXX_2023-01-01.7z",), "downloaded by this project's first release"),
    Edition(2024, "FXX", "RPG_3-0__GPKG_LAMB93_FXX_2024-01-01",
            _vols("RPG_3-0__GPKG_LAMB93_FXX_2024-01-01", 5), "published links (fiboa-cli)"),
)}
# 2025 (RPG 4.0) is reported as RPG_4-0__GPKG_LAMB93_FXX_2025-01-01.7z.001 by one source only, without the
# number of volumes: it is taken from the feed, never guessed.
REPORTED = {2025: "RPG_4-0__GPKG_LAMB93_FXX_2025-01-01"}
# Regional archives (one .7z per region), as reported in our issue tracker; unverified here, and only used
# when the feed does not answer.
REGIONAL = {2024: "RPG_3-0__GPKG_LAMB93_R{region}_2024-01-01", 2023: "RPG_2-2__SHP_LAMB93_R{region}_2023-01-01"}

# INSEE region of each metropolitan département (COG since 2016), for the regional archives.
REGIONS = {
    "84": "01 03 07 15 26 38 42 43 63 69 73 74", "27": "21 25 39 58 70 71 89 90", "53": "22 29 35 56",
    "24": "18 28 36 37 41 45", "94": "2A 2B", "44": "08 10 51 52 54 55 57 67 68 88", "32": "02 59 60 62 80",
    "11": "75 77 78 91 92 93 94 95", "28": "14 27 50 61 76", "75": "16 17 19 23 24 33 40 47 64 79 86 87",
    "76": "09 11 12 30 31 32 34 46 48 65 66 81 82", "52": "44 49 53 72 85", "93": "04 05 06 13 83 84",
}
REGION_OF = {d: r for r, ds in REGIONS.items() for d in ds.split()}


def region_of(departement: str) -> str:
    """The INSEE region code (``"53"``) of a metropolitan département code (``"29"``)."""
    try:
        return REGION_OF[departement]
    except KeyError:
        raise CropmapError(f"--departement {departement}: no metropolitan region known for it") from None


def wfs_typename(year: int | None) -> str:
    """The WFS feature type of an edition (``None``: the latest one)."""
    return "RPG.LATEST:parcelles_graphiques" if year is None else f"RPG.{year}:parcelles_graphiques"


@dataclass(frozen=True)
class FeedEntry:
    title: str  # the resource name
    zone: str
    format: str
    edition_date: str


def _resource_year(title: str) -> int | None:
    m = re.search(r"_(\d{4})-01-01$", title) or re.search(r"FR-(\d{4})$", title) or re.search(r"-(\d{4})_", title)
    return int(m.group(1)) if m else None


def _parse_xml(url: str, body: bytes) -> ET.Element:
    try:
        return ET.fromstring(body)
    except ET.ParseError as e:
        raise CropmapError(f"{redact(url)}: not an Atom feed ({e})") from None


def feed_entries(feed_url: str = FEED_URL, *, allow_http: bool = False, retries: int = 3, backoff: float = 2.0,
                 rate: RateLimit | None = None) -> list[FeedEntry]:
    """Every resource of the feed, page after page (``?page=N``) until a page adds none."""
    rate = rate or RateLimit(2.0)  # the feed answers 429 to fast page walks
    entries: list[FeedEntry] = []
    seen: set[str] = set()
    for page in range(1, MAX_FEED_PAGES + 1):
        url = f"{feed_url}{'&' if '?' in feed_url else '?'}page={page}"
        root = _parse_xml(url, get_bytes(url, allow_http=allow_http, retries=retries, backoff=backoff, rate=rate))
        new = 0
        for e in root.findall(f"{_ATOM}entry"):
            title = (e.findtext(f"{_ATOM}title") or "").strip()
            if not title or title in seen:
                continue
            seen.add(title)
            new += 1
            zone, fmt = e.find(f"{_GPF}zone"), e.find(f"{_GPF}format")
            entries.append(FeedEntry(title, zone.get("term", "") if zone is not None else "",
                                     fmt.get("term", "") if fmt is not None else "",
                                     (e.findtext(f"{_GPF}editionDate") or "").strip()))
        if not new:
            break
    return entries


def feed_files(feed_url: str, resource: str, *, allow_http: bool = False, retries: int = 3, backoff: float = 2.0,
               rate: RateLimit | None = None) -> tuple[str, tuple[str, ...]]:
    """The folder URL and the archive files that a resource's own feed (``{feed_url}/{resource}``) links to, in
    volume order: the ``.7z`` or ``.7z.NNN`` links only (never a checksum or a readme beside them)."""
    rate = rate or RateLimit(2.0)
    url = f"{feed_url.rstrip('/')}/{urllib.parse.quote(resource)}"
    root = _parse_xml(url, get_bytes(url, allow_http=allow_http, retries=retries, backoff=backoff, rate=rate))
    found: dict[str, str] = {}
    for link in root.iter(f"{_ATOM}link"):
        href = urllib.parse.urljoin(url, link.get("href", ""))
        name = PurePosixPath(urllib.parse.urlsplit(href).path).name
        if _VOLUME.search(name):
            found[name] = href.rsplit("/", 1)[0]
    bases = set(found.values())
    if len(bases) > 1:
        raise CropmapError(f"{redact(url)}: the volumes of {resource} are in several folders")
    return (bases.pop() if bases else ""), tuple(sorted(found))


def _pick(entries: list[FeedEntry], year: int, zone: str | None) -> FeedEntry | None:
    """The feed's archive for ``year`` in ``zone`` (None: national), preferring GeoPackage over shapefile and
    Lambert-93 over other projections."""
    def national(t: str) -> bool:
        return bool(re.search(r"_(FXX|FR)([-_]|$)", t))

    def region(t: str) -> bool:
        return bool(re.search(rf"_R{zone}([-_]|$)", t)) if zone else False

    cands = [e for e in entries if _resource_year(e.title) == year and (region(e.title) if zone else national(e.title))]
    cands = [e for e in cands if "LAMB93" in e.title.upper()] or cands
    cands.sort(key=lambda e: (0 if "GPKG" in e.title.upper() else 1, e.title))
    return cands[0] if cands else None


def find_edition(year: int, *, region: str | None = None, feed_url: str | None = FEED_URL, allow_http: bool = False,
                 retries: int = 3, backoff: float = 2.0) -> Edition:
    """The archive of ``year`` (national, or of INSEE ``region``): from the feed when it answers, else from
    the table; an edition that cannot be had is one line saying which and why."""
    if year not in YEARS:
        raise CropmapError(f"RPG {year}: no such edition (the RPG is published for {YEARS.start}-{YEARS.stop - 1})")
    why = "no feed given"
    if feed_url:
        try:
            rate = RateLimit(2.0)
            entry = _pick(feed_entries(feed_url, allow_http=allow_http, retries=retries, backoff=backoff, rate=rate),
                          year, region)
            if entry is not None:
                base, files = feed_files(feed_url, entry.title, allow_http=allow_http, retries=retries,
                                         backoff=backoff, rate=rate)
                if not files:
                    raise CropmapError(f"{redact(feed_url)}: resource {entry.title} links to no .7z file")
                return Edition(year, entry.zone or (f"R{region}" if region else "FXX"), entry.title, files, "feed",
                               base)
        except CropmapError as e:
            why = f"feed not usable: {e}"
            log.warning("RPG %s: %s; using the table of known archives", year, why)
        else:  # the feed answered: it is the list of what is published, the table holds only older knowledge
            where = f"region R{region}" if region else "national"
            raise CropmapError(f"RPG {year}: the feed {redact(feed_url)} lists no {where} archive for {year}; use "
                               + ("--source wfs or " if year in WFS_YEARS else "") + "--archive")
    if region is None and year in NATIONAL:
        return NATIONAL[year]
    if region is not None and year in REGIONAL:
        name = REGIONAL[year].format(region=region)
        return Edition(year, f"R{region}", name, (f"{name}.7z",), "reported name (unverified)")
    if region is None and year in REPORTED:
        raise CropmapError(f"RPG {year}: the national archive ({REPORTED[year]}) is reported but its volumes are "
                           f"only known from the feed ({why}); use --source wfs or --archive")
    where = f"region R{region}" if region else "national"
    raise CropmapError(f"RPG {year}: no {where} archive known ({why}); use "
                       + ("--source wfs or " if year in WFS_YEARS else "") + "--archive")
