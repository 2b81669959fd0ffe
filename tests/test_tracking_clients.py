"""A hit's user agent read as the email client, device and OS a report shows.

The corpus is user agents as email clients, browsers and machines send them, gathered
from public code, documentation and mail headers (Outlook's from its own traffic,
Gmail's and Yahoo's image proxies, Apple Mail on macOS and iOS, Thunderbird ...).
"""

from __future__ import annotations

import pytest
import ua_parser
from ua_parser.regex import Resolver as RustResolver

from envoi.tracking.clients import DEVICES, UNKNOWN, Client, describe, warm

GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
YAHOO_PROXY = (
    "Mozilla/5.0 (compatible; YahooMailProxy; "
    "https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html)"
)
APPLE_MAIL_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
)
APPLE_MAIL_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 16_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148"
)
OUTLOOK_2016 = (
    "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 6.1; Trident/7.0; SLCC2; "
    ".NET CLR 2.0.50727; .NET CLR 3.5.30729; .NET CLR 3.0.30729; .NET4.0C; .NET4.0E; "
    "BCP 1.2 GPO; Microsoft Outlook 16.0.9029; Microsoft Outlook 16.0.9029; ms-office; "
    "MSOffice 16)"
)
CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/111.0.0.0 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)

# (user agent, client, device, os)
CORPUS: list[tuple[str, str, str, str]] = [
    # Webmail image proxies: the reader's device is hidden behind them.
    (GMAIL_PROXY, "Gmail", "Webmail", "Other"),
    (YAHOO_PROXY, "Yahoo Mail", "Webmail", "Other"),
    # Apple Mail Privacy Protection's proxies.
    ("Mozilla/5.0", "Apple Mail", "Proxy", "Other"),
    # Outlook for Windows, 2010 and 2016 and later (16.0), IE and Word engines.
    (
        "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 6.1; WOW64; Trident/4.0; SLCC2; "
        ".NET CLR 2.0.50727; .NET CLR 3.5.30729; .NET CLR 3.0.30729; Media Center PC 6.0; "
        "InfoPath.3; .NET4.0C; .NET4.0E; Microsoft Outlook 14.0.7113; ms-office; MSOffice 14)",
        "Outlook",
        "Desktop",
        "Windows",
    ),
    (OUTLOOK_2016, "Outlook", "Desktop", "Windows"),
    (
        "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 10.0; WOW64; Trident/7.0; "
        "Microsoft Outlook 16.0.11328; ms-office; MSOffice 16)",
        "Outlook",
        "Desktop",
        "Windows",
    ),
    (
        "Microsoft Office/14.0 (Windows NT 6.1; Microsoft Outlook 14.0.5128; Pro; ms-office; "
        "MSOffice 14)",
        "Outlook",
        "Desktop",
        "Windows",
    ),
    # `Tablet PC 2.0` is a Windows PC with pen input: still a desktop.
    (
        "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 6.2; Win64; x64; Trident/7.0; .NET4.0C; "
        ".NET4.0E; .NET CLR 2.0.50727; .NET CLR 3.0.30729; .NET CLR 3.5.30729; Tablet PC 2.0; "
        "Microsoft Outlook 14.0.7172; ms-office; MSOffice 14)",
        "Outlook",
        "Desktop",
        "Windows",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 Outlook-iOS/4.2531.0",
        "Outlook",
        "Mobile",
        "iOS",
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.4.2",
        "Thunderbird",
        "Desktop",
        "Linux",
    ),
    # Apple Mail: WebKit and nothing after it.
    (APPLE_MAIL_MAC, "Apple Mail", "Desktop", "macOS"),
    (APPLE_MAIL_IPHONE, "Apple Mail", "Mobile", "iOS"),
    (
        "Mozilla/5.0 (iPad; CPU OS 12_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Mobile/15E148",
        "Apple Mail",
        "Tablet",
        "iOS",
    ),
    # Windows 10 Mail renders in the UWP web view.
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; WebView/3.0) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/70.0.3538.102 Safari/537.36 Edge/18.19044",
        "Windows Mail",
        "Desktop",
        "Windows",
    ),
    # A Samsung phone's Android web view, unchanged: Samsung Email.
    (
        "Mozilla/5.0 (Linux; Android 10; SM-M205F Build/QP1A.190711.020; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/81.0.4044.138 Mobile Safari/537.36",
        "Samsung Email",
        "Mobile",
        "Android",
    ),
    # ... but Instagram's in-app browser on the same phone is Instagram.
    (
        "Mozilla/5.0 (Linux; Android 10; SM-G973F Build/QP1A.190711.020; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/86.0.4240.198 Mobile Safari/537.36 Instagram "
        "166.1.0.42.245 Android (29/10; 420dpi; 1080x2042; samsung; SM-G973F; beyond1; "
        "exynos9820; en_GB; 256099204)",
        "Instagram",
        "Mobile",
        "Android",
    ),
    # Browsers (web views of the message, clicks).
    (CHROME_WINDOWS, "Chrome", "Desktop", "Windows"),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/111.0.0.0 Safari/537.36",
        "Chrome",
        "Desktop",
        "macOS",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:66.0) Gecko/20100101 Firefox/66.0",
        "Firefox",
        "Desktop",
        "Windows",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/81.0.4044.113 Safari/537.36 Edg/81.0.416.58",
        "Edge",
        "Desktop",
        "Windows",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/18.5 Safari/605.1.15",
        "Safari",
        "Desktop",
        "macOS",
    ),
    (SAFARI_IPHONE, "Mobile Safari", "Mobile", "iOS"),
    (
        "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "CriOS/126.0.6478.153 Mobile/15E148 Safari/604.1",
        "Chrome Mobile iOS",
        "Tablet",
        "iOS",
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/112.0.0.0 Mobile Safari/537.36",
        "Chrome Mobile",
        "Mobile",
        "Android",
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
        "Samsung Internet",
        "Mobile",
        "Android",
    ),
    # An Android tablet's browser leaves `Mobile` out.
    (
        "Mozilla/5.0 (Linux; Android 13; SM-X706B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36",
        "Chrome",
        "Tablet",
        "Android",
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/83.0.4103.7 Safari/537.36",
        "Chrome",
        "Desktop",
        "Linux",
    ),
    # Machines.
    (
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Googlebot",
        "Bot",
        "Other",
    ),
    (
        "Mozilla/5.0 (compatible; Linux x86_64; Mail.RU_Bot/Img/2.0; +http://go.mail.ru/help/robots)",
        "Mail.RU_Bot",
        "Bot",
        "Linux",
    ),
    (
        "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/534+ (KHTML, like Gecko) BingPreview/1.0b",
        "Bing Preview",
        "Bot",
        "Windows",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Microsoft Office "
        "Existence Discovery",
        "Microsoft Office",
        "Bot",
        "Windows",
    ),
    ("Barracuda Sentinel (EE)", "Barracuda", "Bot", "Other"),
    ("curl/8.4.0", "curl", "Bot", "Other"),
    ("python-requests/2.32.5", "Python", "Bot", "Other"),
    ("Python/3.9 aiohttp/3.8.1", "Python", "Bot", "Other"),
    ("Go-http-client/1.1", "Go", "Bot", "Other"),
    ("okhttp/4.10.0", "Java", "Bot", "Other"),
    ("facebookexternalhit/1.1", "Link preview", "Bot", "Other"),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/120.0.6099.109 Safari/537.36",
        "Headless Chrome",
        "Bot",
        "Linux",
    ),
]


@pytest.mark.parametrize(("user_agent", "client", "device", "os"), CORPUS)
def test_the_corpus_reads_as_its_client_device_and_os(
    user_agent: str, client: str, device: str, os: str
) -> None:
    assert describe(user_agent) == Client(client, device, os)


def test_the_corpus_is_large_and_covers_every_device_but_other() -> None:
    assert len(CORPUS) >= 30
    assert {device for _, _, device, _ in CORPUS} == set(DEVICES) - {"Other"}


@pytest.mark.parametrize(
    "user_agent",
    [
        "",
        "   ",
        "\x00\x01\x02",
        "(" * 5000,
        "Mozilla/5.0 (" + "A" * 10_000,
        "Почта Mail.ru ☃",
        "Mozilla/5.0 (Linux; Android 999999999999999999999; SM-" + "9" * 400 + ")",
    ],
)
def test_a_header_of_any_shape_gives_an_answer_and_never_an_error(user_agent: str) -> None:
    described = describe(user_agent)
    assert described.device in DEVICES
    assert described.client
    assert described.os


def test_no_user_agent_is_unknown() -> None:
    assert describe("") == UNKNOWN == Client("Other", "Other", "Other")


def test_only_the_first_500_characters_count() -> None:
    """An event keeps 500 characters: what follows cannot change the answer."""
    padded = CHROME_WINDOWS + " " * (500 - len(CHROME_WINDOWS))
    assert describe(padded + "Thunderbird/115.4.2") == describe(CHROME_WINDOWS)


def test_answers_are_cached_by_user_agent() -> None:
    describe(SAFARI_IPHONE)
    before = describe.cache_info().hits
    for _ in range(100):
        describe(SAFARI_IPHONE)
    assert describe.cache_info().hits == before + 100


def test_the_fast_matcher_is_installed() -> None:
    """Hits arrive by thousands a second: ua-parser must run its Rust matcher
    (`ua-parser[regex]`), not the pure-Python one (fifty times slower)."""
    warm()
    assert ua_parser.BestAvailableResolver is RustResolver
    assert describe(GMAIL_PROXY).client == "Gmail"
