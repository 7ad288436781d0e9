"""The smart-card rules, table-driven, plus properties that must hold for any input."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.policy import (
    UNKNOWN_CLIENT,
    ClientInfo,
    DirectorySettings,
    Protocol,
    Purpose,
    Reason,
    client_of,
    decide_smart_card,
    in_session_use,
    login_methods,
    parse_version,
)
from broker.regions import RegionCatalogue, RegionEntry

CATALOGUE = RegionCatalogue.load(Path(__file__).resolve().parents[2] / "config" /
                                 "regions.toml")
GOV_WEST = CATALOGUE.get("us-gov-west-1")
EAST = CATALOGUE.get("us-east-1")
NO_WSP = RegionEntry("xx-nowsp-1", "No WSP", "SLxx", wsp=False, pcoip=True,
                     smart_card_pre_session=False, smart_card_in_session=False)
ON = DirectorySettings(pre_session=True, in_session=True, password_login=True)
OFF = DirectorySettings(pre_session=False, in_session=False, password_login=False)
WIN = ClientInfo("windows", "x86_64", "3.1.1")


def reasons(region: RegionEntry = GOV_WEST, directory: DirectorySettings = ON,
            purpose: Purpose = Purpose.PRE_SESSION, **kw: object) -> set[str]:
    return {r.value for r in decide_smart_card(region, directory, purpose, **kw).reasons}


def test_only_govcloud_west_allows_pre_session_in_the_shipped_catalogue() -> None:
    allowed = [e.id for e in CATALOGUE if e.smart_card_pre_session]
    assert allowed == ["us-gov-west-1"]


def test_every_wsp_region_allows_in_session() -> None:
    assert all(e.smart_card_in_session for e in CATALOGUE if e.wsp)


def test_windows_64_bit_3_1_1_one_card_wsp_in_govcloud_is_allowed() -> None:
    d = decide_smart_card(GOV_WEST, ON, Purpose.PRE_SESSION, client=WIN, card_count=1,
                          protocol=Protocol.WSP)
    assert d.allowed and d.reasons == ()


def test_pcoip_workspace_refuses_smart_card() -> None:
    assert "smart_card_requires_wsp" in reasons(client=WIN, card_count=1,
                                                protocol=Protocol.PCOIP)
    assert "smart_card_requires_wsp" in reasons(purpose=Purpose.IN_SESSION,
                                                protocol=Protocol.PCOIP)


@pytest.mark.parametrize("version,ok", [
    ("3.1.1", True), ("3.1.10", True), ("3.2", True), ("4.0.0", True), ("3.1.1.123", True),
    ("v3.1.1", True), ("3.1.0", False), ("3.1", False), ("3.0.9", False), ("2.9.99", False),
    ("", False), ("abc", False), ("3..1", False), ("-1", False), ("3.1.x", False),
    ("9" * 100, False), ("3.1.1-beta", False),
])
def test_client_version_is_compared_as_a_version(version: str, ok: bool) -> None:
    got = reasons(client=ClientInfo("windows", "x86_64", version), card_count=1)
    assert ("client_version_unsupported" not in got) is ok


@pytest.mark.parametrize("arch,ok", [
    ("x86_64", True), ("AMD64", True), ("x64", True), ("arm64", True), ("x86", False),
    ("i386", False), ("win32", False), ("", False), ("sparc", False),
])
def test_only_64_bit_windows(arch: str, ok: bool) -> None:
    got = reasons(client=ClientInfo("windows", arch, "3.1.1"), card_count=1)
    assert ("client_arch_unsupported" not in got) is ok


@pytest.mark.parametrize("platform", ["macos", "linux", "web", "ios", "android", "", "Windows7?"])
def test_only_the_windows_client(platform: str) -> None:
    assert "client_platform_unsupported" in reasons(client=ClientInfo(platform, "x86_64",
                                                                      "3.1.1"))


@pytest.mark.parametrize("count,reason", [(0, "no_card"), (2, "multiple_cards"),
                                          (5, "multiple_cards"), (-1, "no_card"), (1, None),
                                          (None, None)])
def test_one_card_at_a_time(count: int | None, reason: str | None) -> None:
    for purpose in Purpose:
        got = reasons(purpose=purpose, client=WIN, card_count=count)
        assert got == ({reason} if reason else set()), (purpose, got)


def test_every_reason_is_reported_at_once() -> None:
    got = reasons(region=EAST, directory=OFF, client=ClientInfo("macos", "x86", "1.0"),
                  card_count=2, protocol=Protocol.PCOIP)
    assert got == {"smart_card_requires_wsp", "region_pre_session_unavailable",
                   "smart_card_disabled", "client_platform_unsupported",
                   "client_arch_unsupported", "client_version_unsupported", "multiple_cards"}


# The reference's sentences (/work/shared/reference/workspaces-client-smart-card-support.md),
# each turned into rows by hand: (sentence, region, protocol, client, cards, purpose, refusals).
# An empty refusal set means allowed. Written from the text, not from broker/policy.py, so the
# generated matrix below is not the only check of the rule.
W64 = ClientInfo("windows", "x86_64", "3.1.1")
TRUTH_TABLE = [
    ("3.1.1 Windows client supports smart cards if the WorkSpace is using WSP",
     GOV_WEST, Protocol.WSP, W64, 1, Purpose.PRE_SESSION, set()),
    ("3.1.1 or later", GOV_WEST, Protocol.WSP, ClientInfo("windows", "x86_64", "4.0.0"), 1,
     Purpose.PRE_SESSION, set()),
    ("PCoIP: the WorkSpaces clients do not support smart cards",
     GOV_WEST, Protocol.PCOIP, W64, 1, Purpose.PRE_SESSION, {"smart_card_requires_wsp"}),
    ("only one smart card is currently allowed at a time (pre-session)",
     GOV_WEST, Protocol.WSP, W64, 2, Purpose.PRE_SESSION, {"multiple_cards"}),
    ("only one smart card is currently allowed at a time (in-session)",
     EAST, Protocol.WSP, W64, 2, Purpose.IN_SESSION, {"multiple_cards"}),
    ("pre-session: insert your smart card (none inserted)",
     GOV_WEST, Protocol.WSP, W64, 0, Purpose.PRE_SESSION, {"no_card"}),
    ("Pre-session authentication is available only in GovCloud (US-West)",
     EAST, Protocol.WSP, W64, 1, Purpose.PRE_SESSION, {"region_pre_session_unavailable"}),
    ("... and so is the logon at 'Starting WorkSpace' (PIN again)",
     EAST, Protocol.WSP, W64, 1, Purpose.LOGON, {"region_pre_session_unavailable"}),
    ("In-session authentication is available in all Regions where WSP is supported",
     EAST, Protocol.WSP, W64, 1, Purpose.IN_SESSION, set()),
    ("... and not in a Region without WSP",
     NO_WSP, Protocol.WSP, W64, 1, Purpose.IN_SESSION, {"in_session_not_allowed"}),
    ("Only the Windows client application version 3.1.1 or later (3.1.0)",
     GOV_WEST, Protocol.WSP, ClientInfo("windows", "x86_64", "3.1.0"), 1, Purpose.PRE_SESSION,
     {"client_version_unsupported"}),
    ("Only the Windows client application (macOS)",
     GOV_WEST, Protocol.WSP, ClientInfo("macos", "x86_64", "3.1.1"), 1, Purpose.PRE_SESSION,
     {"client_platform_unsupported"}),
    ("only when the client is running on a 64-bit version of Windows",
     GOV_WEST, Protocol.WSP, ClientInfo("windows", "x86", "3.1.1"), 1, Purpose.PRE_SESSION,
     {"client_arch_unsupported"}),
    ("Only the Windows client ... is supported for smart card authentication (in-session: a "
     "Linux client's session)", EAST, Protocol.WSP, ClientInfo("linux", "x86_64", "3.1.1"), 1,
     Purpose.IN_SESSION, {"client_platform_unsupported"}),
    ("... version 3.1.1 or later (in-session: 3.0.0)", EAST, Protocol.WSP,
     ClientInfo("windows", "x86_64", "3.0.0"), 1, Purpose.IN_SESSION,
     {"client_version_unsupported"}),
    ("... on a 64-bit version of Windows (in-session: 32-bit)", EAST, Protocol.WSP,
     ClientInfo("windows", "x86", "3.1.1"), 1, Purpose.IN_SESSION, {"client_arch_unsupported"}),
]


@pytest.mark.parametrize("sentence,region,protocol,client,count,purpose,refusals", TRUTH_TABLE,
                         ids=[row[0][:60] for row in TRUTH_TABLE])
def test_the_reference_truth_table(sentence: str, region: RegionEntry, protocol: Protocol,
                                   client: ClientInfo, count: int, purpose: Purpose,
                                   refusals: set[str]) -> None:
    d = decide_smart_card(region, ON, purpose, client=client, card_count=count,
                          protocol=protocol)
    assert {r.value for r in d.reasons} == refusals, sentence
    assert d.allowed is (refusals == set())


REGIONS = [("govcloud-west", GOV_WEST), ("commercial", EAST), ("no-wsp", NO_WSP)]


@pytest.mark.parametrize("name,region,protocol,client,count,purpose,directory",
                         [(n, r, p, c, k, u, d) for (n, r), p, c, k, u, d in itertools.product(
                             REGIONS, list(Protocol),
                             [WIN, ClientInfo("windows", "x86", "3.1.1"),
                              ClientInfo("macos", "arm64", "3.1.1"),
                              ClientInfo("windows", "x86_64", "3.1.0")],
                             [0, 1, 2], list(Purpose), [ON, OFF])])
def test_rule_matrix(name: str, region: RegionEntry, protocol: Protocol, client: ClientInfo,
                     count: int, purpose: Purpose, directory: DirectorySettings) -> None:
    """The decision is allowed exactly when every rule holds (each rule stated once here):
    the client rule holds pre-session and in-session alike."""
    d = decide_smart_card(region, directory, purpose, client=client, card_count=count,
                          protocol=protocol)
    pre = purpose in (Purpose.PRE_SESSION, Purpose.LOGON)
    expected = (protocol == Protocol.WSP and count == 1 and region.wsp and client == WIN and (
        (pre and region.smart_card_pre_session and directory.pre_session)
        or (not pre and region.smart_card_in_session and directory.in_session)))
    assert d.allowed is expected
    assert d.allowed == (d.reasons == ())


def test_login_methods_offers_smart_card_only_when_allowed() -> None:
    assert login_methods(GOV_WEST, ON, WIN).methods == ("smart_card", "password")
    assert login_methods(EAST, ON, WIN).methods == ("password",)
    offer = login_methods(EAST, DirectorySettings(True, True, False), WIN)
    assert offer.methods == () and offer.in_session.allowed
    assert login_methods(GOV_WEST, OFF, WIN).methods == ()


def test_parse_version() -> None:
    assert parse_version("3.1.10") == (3, 1, 10) and parse_version("3.1.10") > (3, 1, 9)
    assert parse_version("junk") is None


text = st.text(max_size=40)


@given(region=st.sampled_from([GOV_WEST, EAST, NO_WSP]),
       pre=st.booleans(), inside=st.booleans(), platform=text, arch=text, version=text,
       count=st.one_of(st.none(), st.integers(-5, 10)), purpose=st.sampled_from(list(Purpose)))
def test_pcoip_is_never_allowed(region, pre, inside, platform, arch, version, count,  # type: ignore[no-untyped-def]
                                purpose) -> None:
    d = decide_smart_card(region, DirectorySettings(pre, inside), purpose,
                          client=ClientInfo(platform, arch, version), card_count=count,
                          protocol=Protocol.PCOIP)
    assert not d.allowed and Reason.SMART_CARD_REQUIRES_WSP in d.reasons


@given(region=st.sampled_from(list(CATALOGUE) + [NO_WSP]), platform=text, arch=text,
       version=text, count=st.one_of(st.none(), st.integers(-5, 10)),
       purpose=st.sampled_from([Purpose.PRE_SESSION, Purpose.LOGON]))
def test_pre_session_never_outside_catalogue_regions(region, platform, arch, version, count,  # type: ignore[no-untyped-def]
                                                     purpose) -> None:
    d = decide_smart_card(region, ON, purpose, client=ClientInfo(platform, arch, version),
                          card_count=count)
    if not region.smart_card_pre_session:
        assert not d.allowed and Reason.REGION_PRE_SESSION_UNAVAILABLE in d.reasons


def test_policy_imports_nothing_from_twisted_sqlalchemy_or_http() -> None:
    import subprocess
    import sys

    code = ("import sys, broker.policy, broker.registration, broker.regions; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('twisted', 'sqlalchemy', 'klein', 'http')]; print(bad); sys.exit(bool(bad))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("arch", ["x86_64", "AMD64", "x64", " X86-64 ", "arm64", "AArch64"])
def test_64_bit_windows_arch_aliases_are_accepted(arch: str) -> None:
    """x86-64 aliases and ARM64 are "64-bit Windows" (the reference names no CPU)."""
    assert reasons(client=ClientInfo("Windows", arch, "3.1.1"), card_count=1) == set()


@pytest.mark.parametrize("arch", ["x86", "i386", "I686", "win32", "", "sparc", "x86_65"])
def test_32_bit_or_unknown_arch_is_refused(arch: str) -> None:
    assert reasons(client=ClientInfo("windows", arch, "3.1.1"), card_count=1) == {
        "client_arch_unsupported"}


@pytest.mark.parametrize("platform", ["macos", "linux", "web", "ios", "android", "", "windowsx"])
def test_non_windows_client_is_refused_pre_session(platform: str) -> None:
    assert reasons(client=ClientInfo(platform, "x86_64", "3.1.1"), card_count=1) == {
        "client_platform_unsupported"}


@pytest.mark.parametrize("version", ["3.1.1", "3.1.1.123", "3.1.10", "3.2", "4", "v3.1.1",
                                     "5.0.0"])
def test_windows_client_3_1_1_or_later_is_accepted(version: str) -> None:
    assert reasons(client=ClientInfo("windows", "x86_64", version), card_count=1) == set()


@pytest.mark.parametrize("version", ["3.1.0", "3.1", "3", "3.0.99", "2.9.9", "", "abc", "3..1",
                                     "-1", "3.1.1-beta", "3.1.1.", ".3.1.1", "9" * 10_000,
                                     "1." * 5_000, "３.１.１", "3.1.1\n4", "3.1.1\n", " 3.1.1 ",
                                     "\t3.1.1"])
def test_old_or_junk_client_version_is_unsupported(version: str) -> None:
    assert reasons(client=ClientInfo("windows", "x86_64", version), card_count=1) == {
        "client_version_unsupported"}


def test_versions_compare_numerically_not_as_text() -> None:
    assert parse_version("3.1.10") > parse_version("3.1.9")  # type: ignore[operator]
    assert parse_version("3.1.1.123") == (3, 1, 1, 123)


@pytest.mark.parametrize("count,expected", [(None, set()), (1, set()), (0, {"no_card"}),
                                            (-1, {"no_card"}), (2, {"multiple_cards"}),
                                            (7, {"multiple_cards"})])
def test_one_card_at_a_time_pre_session(count: int | None, expected: set[str]) -> None:
    assert reasons(client=WIN, card_count=count) == expected


@pytest.mark.parametrize("count,expected", [(1, set()), (0, {"no_card"}),
                                            (2, {"multiple_cards"})])
def test_one_card_at_a_time_in_session(count: int, expected: set[str]) -> None:
    assert reasons(EAST, purpose=Purpose.IN_SESSION, card_count=count,
                   protocol=Protocol.WSP) == expected


def test_in_session_applies_the_client_rule() -> None:
    """Only the Windows client 3.1.1+ on 64-bit Windows redirects the card into a WorkSpace."""
    assert reasons(EAST, purpose=Purpose.IN_SESSION, client=ClientInfo("linux", "x86", "1"),
                   card_count=1, protocol=Protocol.WSP) == {
        "client_platform_unsupported", "client_arch_unsupported", "client_version_unsupported"}
    assert reasons(EAST, purpose=Purpose.IN_SESSION, client=WIN, card_count=1,
                   protocol=Protocol.WSP) == set()


def test_a_session_of_an_unknown_client_gets_no_in_session_use() -> None:
    d = in_session_use(EAST, ON, protocol=Protocol.WSP, client=UNKNOWN_CLIENT)
    assert not d.allowed and d.reasons == (Reason.CLIENT_UNKNOWN,)


def test_no_client_in_the_question_adds_no_reason() -> None:
    """An administrator's view of a directory asks about no client at all."""
    assert reasons(EAST, purpose=Purpose.IN_SESSION, protocol=Protocol.WSP) == set()


@pytest.mark.parametrize("os,detail,refused", [
    ("windows", "sudo", True), ("WINDOWS", "sudo", True), ("linux", "sudo", False),
    (None, "sudo", False), ("windows", "browser", False), ("windows", None, False),
    ("linux", "browser", False)])
def test_sudo_is_refused_on_a_windows_workspace(os: str | None, detail: str | None,
                                                refused: bool) -> None:
    d = in_session_use(EAST, ON, protocol=Protocol.WSP, client=WIN, os=os, detail=detail)
    assert d.allowed is not refused
    assert (Reason.PURPOSE_NOT_FOR_OS in d.reasons) is refused


@pytest.mark.parametrize("recorded,expected", [
    ({"platform": "windows", "arch": "x64", "version": "3.1.1"},
     ClientInfo("windows", "x64", "3.1.1")),
    (None, UNKNOWN_CLIENT), ({"platform": "windows"}, UNKNOWN_CLIENT),
    ({"platform": 1, "arch": "x", "version": "3"}, UNKNOWN_CLIENT), ("windows", UNKNOWN_CLIENT)])
def test_a_recorded_client_is_read_back_or_unknown(recorded: object, expected: object) -> None:
    assert client_of(recorded) == expected


def test_pcoip_in_session_is_in_session_not_allowed_and_requires_wsp() -> None:
    assert reasons(EAST, purpose=Purpose.IN_SESSION, protocol=Protocol.PCOIP) == {
        "smart_card_requires_wsp", "in_session_not_allowed"}


def test_in_session_region_without_wsp_is_not_allowed() -> None:
    assert reasons(NO_WSP, purpose=Purpose.IN_SESSION) == {"in_session_not_allowed"}


def test_in_session_directory_toggle_off_is_not_allowed() -> None:
    assert reasons(EAST, OFF, Purpose.IN_SESSION) == {"in_session_not_allowed"}


def test_commercial_region_refuses_pre_session_and_logon() -> None:
    for purpose in (Purpose.PRE_SESSION, Purpose.LOGON):
        assert reasons(EAST, purpose=purpose, client=WIN, card_count=1) == {
            "region_pre_session_unavailable"}


def test_directory_without_pre_session_is_smart_card_disabled() -> None:
    assert reasons(GOV_WEST, OFF, client=WIN, card_count=1) == {"smart_card_disabled"}


def test_reasons_come_in_a_stable_order_without_duplicates() -> None:
    d = decide_smart_card(NO_WSP, OFF, Purpose.LOGON, client=ClientInfo("web", "", ""),
                          card_count=3, protocol=Protocol.PCOIP)
    assert list(d.reasons) == [r for r in Reason if r in d.reasons]
    assert len(set(d.reasons)) == len(d.reasons)


def test_protocol_names_are_case_insensitive() -> None:
    assert Protocol("pcoip") is Protocol.PCOIP and Protocol("wsp") is Protocol.WSP


def test_reason_values_are_the_api_codes() -> None:
    assert {r.value for r in Reason} == {
        "region_pre_session_unavailable", "client_platform_unsupported",
        "client_arch_unsupported", "client_version_unsupported", "multiple_cards", "no_card",
        "smart_card_disabled", "smart_card_requires_wsp", "in_session_not_allowed",
        "client_unknown", "purpose_not_for_os"}


def test_login_methods_ignore_card_count_for_in_session() -> None:
    offer = login_methods(GOV_WEST, ON, WIN, card_count=2)
    assert offer.in_session.allowed and not offer.pre_session.allowed
    assert offer.methods == ("password",)


def test_login_methods_tell_a_linux_client_its_sessions_get_no_in_session_use() -> None:
    offer = login_methods(EAST, ON, ClientInfo("linux", "x86_64", "3.1.1"))
    assert offer.methods == ("password",) and not offer.in_session.allowed
    assert offer.in_session.reasons == (Reason.CLIENT_PLATFORM_UNSUPPORTED,)


def test_login_methods_refuse_smart_card_for_an_old_mac_client_with_reasons() -> None:
    offer = login_methods(GOV_WEST, ON, ClientInfo("macos", "arm64", "3.0.0"))
    assert offer.methods == ("password",)
    assert set(offer.pre_session.reasons) == {Reason.CLIENT_PLATFORM_UNSUPPORTED,
                                              Reason.CLIENT_VERSION_UNSUPPORTED}


@given(platform=text, arch=text, version=text, junk=st.text(max_size=200))
def test_arbitrary_client_text_never_raises(platform, arch, version, junk) -> None:  # type: ignore[no-untyped-def]
    parse_version(junk)
    for region in (GOV_WEST, EAST, NO_WSP):
        for purpose in Purpose:
            decide_smart_card(region, ON, purpose, client=ClientInfo(platform, arch, version))
        login_methods(region, ON, ClientInfo(platform, arch, version))
