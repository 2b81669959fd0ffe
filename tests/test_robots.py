"""The rules that flag machine opens and bot clicks, each on the hits it exists for,
and the ordinary opens and clicks of people, which no rule may flag."""

from __future__ import annotations

import re

import pytest

from envoi.core.robots import (
    APPLE_MPP,
    BOT,
    BURST_LINKS,
    CLICK_SECONDS,
    FLAGS,
    HEAD,
    IMAGE_PROXIES,
    MACHINE_AGENTS,
    PREFETCH,
    PREFETCH_SECONDS,
    SCANNER,
    image_proxy,
    in_apple_network,
    judge_click,
    judge_open,
    machine_agent,
)
from tests.test_tracking_clients import (
    APPLE_MAIL_IPHONE,
    APPLE_MAIL_MAC,
    CHROME_WINDOWS,
    CORPUS,
    GMAIL_PROXY,
    OUTLOOK_2016,
    SAFARI_IPHONE,
    YAHOO_PROXY,
)

HOME = "81.2.69.142"  # a reader's address (a British ISP's)
GOOGLE_PROXY_ADDRESS = "66.249.93.202"
APPLE_PROXY_ADDRESS = "17.58.63.10"
HOUR = 3600.0

PEOPLE = [GMAIL_PROXY, YAHOO_PROXY, APPLE_MAIL_MAC, APPLE_MAIL_IPHONE, OUTLOOK_2016]
PEOPLE += [CHROME_WINDOWS, SAFARI_IPHONE]


# -- people ---------------------------------------------------------------------------


@pytest.mark.parametrize("user_agent", PEOPLE)
def test_an_ordinary_open_is_a_persons(user_agent: str) -> None:
    assert judge_open(user_agent, HOME, HOUR) is None
    assert judge_open(user_agent, HOME, None) is None


def test_gmail_proxy_opening_at_reading_time_is_a_person() -> None:
    assert judge_open(GMAIL_PROXY, GOOGLE_PROXY_ADDRESS, PREFETCH_SECONDS + 1) is None


@pytest.mark.parametrize("user_agent", [CHROME_WINDOWS, SAFARI_IPHONE, APPLE_MAIL_IPHONE])
def test_an_ordinary_click_is_a_persons(user_agent: str) -> None:
    assert judge_click(user_agent, HOME, "GET", HOUR, 1) is None
    assert judge_click(user_agent, HOME, "GET", None, 1) is None


def test_no_person_in_the_client_corpus_is_flagged() -> None:
    """Every reader and browser of the clients' corpus, opening an hour after delivery."""
    people = [ua for ua, _, device, _ in CORPUS if device not in {"Bot", "Proxy"}]
    assert len(people) > 20
    flagged = {ua: judge_open(ua, HOME, HOUR) for ua in people}
    assert {ua: flag for ua, flag in flagged.items() if flag} == {}


# -- Apple Mail Privacy Protection ------------------------------------------------------


@pytest.mark.parametrize("address", [APPLE_PROXY_ADDRESS, HOME, "2a01:b740::1", ""])
def test_the_bare_user_agent_is_apple_mail_privacy_protection(address: str) -> None:
    assert judge_open("Mozilla/5.0", address, HOUR) == APPLE_MPP
    assert judge_open(" Mozilla/5.0 ", address, None) == APPLE_MPP


@pytest.mark.parametrize(
    "address", [APPLE_PROXY_ADDRESS, "2620:149:a44::1", "2403:300:a0c::1", "::ffff:17.1.2.3"]
)
def test_apple_mail_fetching_from_apples_network_is_privacy_protection(address: str) -> None:
    assert judge_open(APPLE_MAIL_IPHONE, address, HOUR) == APPLE_MPP
    assert judge_open(APPLE_MAIL_MAC, address, HOUR) == APPLE_MPP
    assert judge_open("", address, HOUR) == APPLE_MPP


def test_a_browser_on_apples_network_is_not_privacy_protection() -> None:
    assert judge_open(CHROME_WINDOWS, APPLE_PROXY_ADDRESS, HOUR) is None
    assert judge_open(SAFARI_IPHONE, APPLE_PROXY_ADDRESS, HOUR) is None


@pytest.mark.parametrize(
    ("address", "apple"),
    [
        ("17.0.0.1", True),
        ("17.255.255.255", True),
        ("18.0.0.1", False),
        ("16.255.255.255", False),
        ("2620:149::", True),
        ("2620:14a::", False),
        ("not an address", False),
        ("", False),
    ],
)
def test_apples_networks(address: str, apple: bool) -> None:
    assert in_apple_network(address) is apple


def test_the_bare_user_agent_clicking_is_a_bot() -> None:
    """Privacy protection fetches images, never links: a bare user agent clicking is a
    script."""
    assert judge_click("Mozilla/5.0", HOME, "GET", HOUR, 1) == BOT


# -- image proxies fetching on arrival ---------------------------------------------------


@pytest.mark.parametrize("user_agent", [GMAIL_PROXY, YAHOO_PROXY])
@pytest.mark.parametrize("seconds", [0.5, PREFETCH_SECONDS, -3.0])
def test_an_image_proxy_opening_on_arrival_is_a_prefetch(user_agent: str, seconds: float) -> None:
    assert judge_open(user_agent, GOOGLE_PROXY_ADDRESS, seconds) == PREFETCH


def test_an_image_proxy_fetching_a_link_is_a_prefetch() -> None:
    assert judge_click(GMAIL_PROXY, GOOGLE_PROXY_ADDRESS, "GET", HOUR, 1) == PREFETCH


def test_a_direct_client_opening_soon_after_delivery_is_a_person() -> None:
    """A reader watching the inbox may open within seconds: only proxies prefetch."""
    assert judge_open(OUTLOOK_2016, HOME, 2.0) is None
    assert judge_open(APPLE_MAIL_IPHONE, HOME, 2.0) is None


def test_office_checking_a_link_before_the_browser_is_a_prefetch() -> None:
    assert judge_click(OUTLOOK_2016, HOME, "GET", HOUR, 1) == PREFETCH
    bare_office = "Mozilla/4.0 (compatible; ms-office; MSOffice 16)"
    assert judge_click(bare_office, HOME, "GET", HOUR, 1) == PREFETCH
    existence = (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Microsoft Office "
        "Existence Discovery"
    )
    assert judge_click(existence, HOME, "GET", HOUR, 1) == PREFETCH
    assert judge_open(existence, HOME, HOUR) == PREFETCH


# -- security scanners ---------------------------------------------------------------------


# Barracuda's is a captured user agent; the others carry the gateway's name the way
# its fetches are reported to (the pattern looks for the name, not the whole string).
@pytest.mark.parametrize(
    "user_agent",
    [
        "Barracuda Sentinel (EE)",
        "Mozilla/5.0 (compatible; Proofpoint URL Defense)",
        "Mimecast URL Protect",
        "Mozilla/5.0 (compatible; Google-Safety; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/534+ (KHTML, like Gecko) BingPreview/1.0b",
        "Cisco IronPort",
        "TrendMicro InterScan",
    ],
)
def test_a_named_security_scanner_is_a_scanner(user_agent: str) -> None:
    assert judge_open(user_agent, HOME, HOUR) == SCANNER
    assert judge_click(user_agent, HOME, "GET", HOUR, 1) == SCANNER


@pytest.mark.parametrize("seconds", [0.0, 4.2, CLICK_SECONDS, -1.0])
def test_a_click_within_seconds_of_delivery_is_a_scanner(seconds: float) -> None:
    """A gateway that opens links in a browser looks like Chrome: only its speed tells."""
    assert judge_click(CHROME_WINDOWS, HOME, "GET", seconds, 1) == SCANNER


def test_a_click_after_the_threshold_is_a_person() -> None:
    assert judge_click(CHROME_WINDOWS, HOME, "GET", CLICK_SECONDS + 0.5, 1) is None


def test_several_links_of_a_send_in_a_few_seconds_are_a_scanner() -> None:
    assert judge_click(CHROME_WINDOWS, HOME, "GET", HOUR, BURST_LINKS) == SCANNER
    assert judge_click(CHROME_WINDOWS, HOME, "GET", HOUR, BURST_LINKS + 5) == SCANNER
    assert judge_click(CHROME_WINDOWS, HOME, "GET", HOUR, BURST_LINKS - 1) is None


# -- bots and HEAD -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user_agent",
    [
        "curl/8.4.0",
        "Wget/1.21.3",
        "python-requests/2.32.5",
        "Python/3.9 aiohttp/3.8.1",
        "Go-http-client/1.1",
        "okhttp/4.10.0",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/120.0.6099.109 Safari/537.36",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "facebookexternalhit/1.1",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    ],
)
def test_scripts_crawlers_and_previewers_are_bots(user_agent: str) -> None:
    assert judge_open(user_agent, HOME, HOUR) == BOT
    assert judge_click(user_agent, HOME, "GET", HOUR, 1) == BOT


def test_no_user_agent_is_a_bot() -> None:
    assert judge_open("", HOME, HOUR) == BOT
    assert judge_click("", HOME, "GET", HOUR, 1) == BOT


def test_a_phone_whose_name_ends_in_bot_is_not_a_crawler() -> None:
    cubot = (
        "Mozilla/5.0 (Linux; Android 10; CUBOT_X20 PRO Build/QP1A.190711.020) "
        "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36"
    )
    assert judge_open(cubot, HOME, HOUR) is None


@pytest.mark.parametrize("method", ["HEAD", "head"])
def test_a_head_request_is_flagged_head(method: str) -> None:
    assert judge_click(CHROME_WINDOWS, HOME, method, HOUR, 1) == HEAD


# -- the tables ------------------------------------------------------------------------------


def test_every_row_gives_a_known_flag_and_is_well_formed() -> None:
    for agent in MACHINE_AGENTS:
        assert agent.flag in FLAGS
        assert agent.hits in {"open", "click", "both"}
        # Words are searched in the lower-cased user agent: an upper-case one never hits.
        assert agent.words
        assert all(word == word.lower() for word in agent.words)
        if agent.pattern is not None:
            re.compile(agent.pattern, re.IGNORECASE)
    for words, name in IMAGE_PROXIES:
        assert name
        assert words
        assert all(word == word.lower() for word in words)


def test_machine_agent_names_the_first_matching_row() -> None:
    barracuda = machine_agent("Barracuda Sentinel (EE)")
    assert barracuda is not None
    assert (barracuda.name, barracuda.flag) == ("Barracuda", SCANNER)
    assert machine_agent(CHROME_WINDOWS) is None
    # Outlook's own user agent is a machine on a click only (Office's link check).
    assert machine_agent(OUTLOOK_2016, "open") is None
    office = machine_agent(OUTLOOK_2016, "click")
    assert office is not None
    assert office.flag == PREFETCH
    assert image_proxy(GMAIL_PROXY) == "Gmail"
    assert image_proxy(CHROME_WINDOWS) is None
