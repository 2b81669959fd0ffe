"""Client addresses placed in a country, region and city: by the database shipped in a
package, and by a MaxMind-format file that the tests write themselves."""

from __future__ import annotations

from pathlib import Path

import pycountry
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from envoi.config import Settings
from envoi.tracking.geo import (
    NOWHERE,
    GeoDatabaseError,
    MaxMindLocator,
    PackagedLocator,
    Place,
    country_name,
    open_locator,
)

NOT_PUBLIC = [
    "10.1.2.3",  # private
    "192.168.0.10",
    "172.16.5.4",
    "127.0.0.1",  # loopback
    "::1",
    "169.254.10.1",  # link-local
    "fe80::1",
    "100.64.0.1",  # carrier-grade NAT
    "fd00::1",  # unique local
    "192.0.2.1",  # documentation
    "2001:db8::1",
    "0.0.0.0",  # noqa: S104 - an address the test feeds, not one it binds
    "::ffff:10.0.0.1",  # a private IPv4 client on a dual-stack socket
]
NOT_ADDRESSES = ["", "garbage", "1.2.3", "1.2.3.4.5", "256.1.1.1", "[::1]", "\x00", "8" * 5000]


# -- the packaged database ----------------------------------------------------------------


@pytest.fixture(scope="module")
def packaged() -> PackagedLocator:
    locator = open_locator("")
    assert isinstance(locator, PackagedLocator)
    return locator


@pytest.mark.parametrize(
    ("address", "code", "name"),
    [
        ("8.8.8.8", "US", "United States"),  # Google Public DNS
        ("2001:4860:4860::8888", "US", "United States"),
        ("193.51.24.1", "FR", "France"),  # RENATER, the French research network
        ("::ffff:8.8.8.8", "US", "United States"),  # IPv4 seen on a dual-stack socket
        (" 8.8.4.4 ", "US", "United States"),
        ("77.88.55.242", "RU", "Russia"),  # Yandex
    ],
)
def test_the_packaged_database_places_public_addresses_in_their_country(
    packaged: PackagedLocator, address: str, code: str, name: str
) -> None:
    assert packaged.locate(address) == Place(code, name, None, None)


@pytest.mark.parametrize("address", NOT_PUBLIC + NOT_ADDRESSES)
def test_private_and_invalid_addresses_are_nowhere(packaged: PackagedLocator, address: str) -> None:
    assert packaged.locate(address) == NOWHERE


def test_packaged_lookups_are_cached(packaged: PackagedLocator) -> None:
    first = packaged.locate("8.8.8.8")
    assert packaged.locate("8.8.8.8") is first


def test_the_packaged_source_names_its_package(packaged: PackagedLocator) -> None:
    assert packaged.source.startswith("iptocc ")
    assert "country only" in packaged.source


def test_the_default_settings_use_the_packaged_database() -> None:
    assert isinstance(open_locator(Settings().geoip_database), PackagedLocator)


# -- a MaxMind-format file -------------------------------------------------------------------


def _city_database(path: Path, database_type: str = "GeoLite2-City") -> Path:
    """A small City database in MaxMind's format and record layout."""
    writer = MMDBWriter(
        ip_version=6,
        database_type=database_type,
        languages=["en"],
        description="envoi test",
        ipv4_compatible=True,
    )
    writer.insert_network(
        IPSet(["81.2.69.0/24"]),
        {
            "country": {"iso_code": "GB", "names": {"en": "Great Britain (the file's name)"}},
            "subdivisions": [{"iso_code": "ENG", "names": {"en": "England"}}],
            "city": {"names": {"en": "London", "fr": "Londres"}},
        },
    )
    writer.insert_network(
        IPSet(["2a02:8100::/27"]),
        {
            "country": {"iso_code": "DE", "names": {"en": "Germany"}},
            "subdivisions": [{"names": {"en": "Berlin"}}],
            "city": {"names": {"en": "Berlin"}},
        },
    )
    # A Country database's record: no subdivision, no city.
    writer.insert_network(IPSet(["193.51.0.0/16"]), {"country": {"iso_code": "FR"}})
    # Only the registry's country (anycast, satellite): it stands for the country.
    writer.insert_network(IPSet(["8.8.8.0/24"]), {"registered_country": {"iso_code": "US"}})
    # A code ISO does not list, named by the file.
    writer.insert_network(
        IPSet(["5.39.0.0/24"]), {"country": {"iso_code": "EU", "names": {"en": "Europe"}}}
    )
    writer.insert_network(IPSet(["9.9.9.0/24"]), {"location": {"latitude": 1.5}})
    writer.to_db_file(str(path))
    return path


@pytest.fixture
def city(tmp_path: Path) -> MaxMindLocator:
    locator = open_locator(str(_city_database(tmp_path / "city.mmdb")))
    assert isinstance(locator, MaxMindLocator)
    return locator


@pytest.mark.parametrize(
    ("address", "place"),
    [
        ("81.2.69.142", Place("GB", "United Kingdom", "England", "London")),
        ("::ffff:81.2.69.142", Place("GB", "United Kingdom", "England", "London")),
        ("2a02:8109:9a00::1", Place("DE", "Germany", "Berlin", "Berlin")),
        ("193.51.24.1", Place("FR", "France", None, None)),
        ("8.8.8.8", Place("US", "United States", None, None)),
        ("5.39.0.1", Place("EU", "Europe", None, None)),
        ("9.9.9.9", NOWHERE),  # a record without any country
        ("1.1.1.1", NOWHERE),  # not in the file
    ],
)
def test_a_maxmind_file_gives_country_region_and_city(
    city: MaxMindLocator, address: str, place: Place
) -> None:
    assert city.locate(address) == place


@pytest.mark.parametrize("address", NOT_PUBLIC + NOT_ADDRESSES)
def test_a_maxmind_file_places_no_private_or_invalid_address(
    city: MaxMindLocator, address: str
) -> None:
    assert city.locate(address) == NOWHERE


def test_the_maxmind_source_names_the_database(city: MaxMindLocator) -> None:
    assert city.source.startswith("GeoLite2-City built 2")
    assert "city.mmdb" in city.source


def test_the_setting_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _city_database(tmp_path / "configured.mmdb")
    monkeypatch.setenv("ENVOI_GEOIP_DATABASE", str(path))
    locator = open_locator(Settings().geoip_database)
    assert locator.locate("81.2.69.1").city_name == "London"


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GeoDatabaseError, match=r"missing\.mmdb"):
        open_locator(str(tmp_path / "missing.mmdb"))


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.mmdb"
    path.write_text("this is not a MaxMind database\n" * 100)
    with pytest.raises(GeoDatabaseError, match="cannot be read as a MaxMind database"):
        open_locator(str(path))


def test_an_asn_database_is_refused(tmp_path: Path) -> None:
    path = _city_database(tmp_path / "asn.mmdb", database_type="GeoLite2-ASN")
    with pytest.raises(GeoDatabaseError, match="GeoLite2-ASN database"):
        open_locator(str(path))


# -- country names ---------------------------------------------------------------------------


def test_every_iso_country_has_a_short_english_name() -> None:
    """Report rows read `Russia`, not `Russian Federation`; `Palestine`, not
    `Palestine, State of`."""
    for country in pycountry.countries:
        name = country_name(country.alpha_2)
        assert name
        assert "," not in name
        assert "(" not in name
    assert country_name("ru") == "Russia"
    assert country_name("KR") == "South Korea"
    assert country_name("XK") == "Kosovo"
    assert country_name("ZZ") is None
