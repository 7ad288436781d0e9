"""The region catalogue: the shipped file's facts, and one clear error for every bad file."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.errors import BrokerError
from broker.regions import RegionCatalogue, RegionCatalogueError, RegionEntry

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "regions.toml"
CATALOGUE = RegionCatalogue.load(SHIPPED)

EXPECTED_REGIONS = {
    "us-east-1", "us-west-2", "af-south-1", "ap-northeast-1", "ap-northeast-2", "ap-south-1",
    "ap-southeast-1", "ap-southeast-2", "ca-central-1", "eu-central-1", "eu-west-1",
    "eu-west-2", "il-central-1", "sa-east-1", "us-gov-west-1", "us-gov-east-1"}

GOOD = """
[region."xx-test-1"]
name = "Test"
prefix = "SLxt"
wsp = true
pcoip = false
smart_card_pre_session = false
smart_card_in_session = true
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "regions.toml"
    p.write_text(text, encoding="utf-8")
    return p


def load_error(tmp_path: Path, text: str) -> RegionCatalogueError:
    with pytest.raises(RegionCatalogueError) as info:
        RegionCatalogue.load(write(tmp_path, text))
    return info.value


def test_shipped_catalogue_lists_every_workspaces_region() -> None:
    assert {e.id for e in CATALOGUE} == EXPECTED_REGIONS
    assert len(CATALOGUE) == len(EXPECTED_REGIONS)


def test_shipped_catalogue_allows_pre_session_only_in_govcloud_west() -> None:
    assert [e.id for e in CATALOGUE if e.smart_card_pre_session] == ["us-gov-west-1"]


def test_shipped_catalogue_offers_wsp_and_in_session_everywhere() -> None:
    assert all(e.wsp and e.smart_card_in_session for e in CATALOGUE)


def test_documented_prefixes_name_their_regions() -> None:
    assert CATALOGUE.get("us-east-1").prefix == "SLiad"
    assert CATALOGUE.get("us-gov-west-1").prefix == "SLgovw"


def test_prefixes_are_letters_and_unique_ignoring_case() -> None:
    prefixes = [e.prefix.lower() for e in CATALOGUE]
    assert len(set(prefixes)) == len(prefixes)
    assert all(e.prefix.isascii() and e.prefix.isalpha() for e in CATALOGUE)


@pytest.mark.parametrize("typed", ["SLgovw", "slgovw", "SLGOVW", "sLgOvW"])
def test_by_prefix_is_case_insensitive(typed: str) -> None:
    entry = CATALOGUE.by_prefix(typed)
    assert entry is not None and entry.id == "us-gov-west-1"


def test_by_prefix_of_unknown_prefix_is_none() -> None:
    assert CATALOGUE.by_prefix("SLnope") is None


def test_get_unknown_region_raises_key_error() -> None:
    with pytest.raises(KeyError):
        CATALOGUE.get("mars-north-1")
    assert "mars-north-1" not in CATALOGUE and "us-east-1" in CATALOGUE


def test_entries_are_frozen() -> None:
    entry = CATALOGUE.get("us-east-1")
    assert isinstance(entry, RegionEntry)
    with pytest.raises(AttributeError):
        entry.wsp = False  # type: ignore[misc]


def test_operator_can_add_a_region_without_code(tmp_path: Path) -> None:
    cat = RegionCatalogue.load(write(tmp_path, GOOD))
    assert cat.get("xx-test-1") == RegionEntry("xx-test-1", "Test", "SLxt", True, False, False,
                                               True)


def test_region_without_wsp_and_without_smart_cards_is_valid(tmp_path: Path) -> None:
    text = GOOD.replace("wsp = true", "wsp = false").replace(
        "smart_card_in_session = true", "smart_card_in_session = false")
    assert not RegionCatalogue.load(write(tmp_path, text)).get("xx-test-1").wsp


def test_catalogue_error_is_a_broker_error_with_config_invalid_code(tmp_path: Path) -> None:
    err = load_error(tmp_path, GOOD.replace("wsp = true", 'wsp = "yes"'))
    assert isinstance(err, BrokerError) and err.code == "config_invalid"


@pytest.mark.parametrize("text,key", [
    (GOOD.replace("wsp = true", 'wsp = "yes"'), "'wsp' must be true or false"),
    (GOOD.replace("pcoip = false", "pcoip = 0"), "'pcoip' must be true or false"),
    (GOOD + "colour = 'blue'\n", "unknown key 'colour'"),
    (GOOD.replace('name = "Test"\n', ""), "missing key 'name'"),
    (GOOD.replace('prefix = "SLxt"', "prefix = 7"), "'prefix' must be"),
    (GOOD.replace('prefix = "SLxt"', 'prefix = "SL-x1"'), "'prefix' must be"),
    (GOOD.replace('prefix = "SLxt"', 'prefix = ""'), "'prefix' must be"),
    (GOOD.replace("smart_card_pre_session = false", "smart_card_pre_session = []"),
     "'smart_card_pre_session' must be true or false"),
])
def test_bad_value_is_one_error_naming_region_and_key(tmp_path: Path, text: str,
                                                      key: str) -> None:
    msg = load_error(tmp_path, text).message
    assert "regions.toml" in msg and "'xx-test-1'" in msg and key in msg


@pytest.mark.parametrize("flag", ["smart_card_pre_session", "smart_card_in_session"])
def test_smart_cards_without_wsp_are_refused_on_load(tmp_path: Path, flag: str) -> None:
    text = GOOD.replace("wsp = true", "wsp = false").replace(
        "smart_card_in_session = true", "smart_card_in_session = false").replace(
        f"{flag} = false", f"{flag} = true")
    err = load_error(tmp_path, text)
    assert "'xx-test-1'" in err.message and "wsp" in err.message
    assert err.details == {"region": "xx-test-1", "key": "wsp"}


def test_duplicate_prefix_ignoring_case_is_refused(tmp_path: Path) -> None:
    other = GOOD.replace("xx-test-1", "xx-test-2").replace("SLxt", "slXT")
    err = load_error(tmp_path, GOOD + other)
    assert "prefix" in err.message and "xx-test-1" in err.message


def test_bad_toml_is_one_error_naming_the_file_and_line(tmp_path: Path) -> None:
    err = load_error(tmp_path, GOOD + "wsp = = true\n")
    assert "regions.toml" in err.message and "not valid TOML" in err.message
    assert "line" in err.message


def test_unknown_top_level_key_is_named(tmp_path: Path) -> None:
    assert "'regions'" in load_error(tmp_path, GOOD + "[regions.x]\na = 1\n").message


def test_empty_catalogue_is_refused(tmp_path: Path) -> None:
    assert "no [region" in load_error(tmp_path, "").message


def test_region_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    assert "'xx'" in load_error(tmp_path, "[region]\nxx = 1\n").message


def test_missing_file_is_a_catalogue_error(tmp_path: Path) -> None:
    with pytest.raises(RegionCatalogueError, match="not found"):
        RegionCatalogue.load(tmp_path / "absent.toml")


def test_undecodable_file_is_a_catalogue_error(tmp_path: Path) -> None:
    p = tmp_path / "regions.toml"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(RegionCatalogueError):
        RegionCatalogue.load(p)


def test_regions_module_imports_nothing_from_twisted_sqlalchemy_or_http() -> None:
    import subprocess
    import sys

    code = ("import sys, broker.regions; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('twisted', 'sqlalchemy', 'klein', 'treq')]; print(bad); sys.exit(bool(bad))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_near_miss_region_gets_a_suggestion() -> None:
    from broker.admin.common import region_suggestion

    known = ["us-east-1", "us-gov-west-1", "eu-west-1"]
    assert region_suggestion("us-gov-wst-1", known) == " (did you mean 'us-gov-west-1'?)"
    assert region_suggestion("US-EST-1", known) == " (did you mean 'us-east-1'?)"
    assert region_suggestion("mars-north-9", known) == ""
