"""A hit's user agent read as email client, device and OS: the report builder's `client`
grouping and its device and OS breakdowns.

Browsers are ua-parser's business (the maintained Python port of the uap-core rules,
with its Rust matcher, `ua-parser-rs`: about 20 microseconds a user agent where the
pure-Python matcher takes a millisecond). What ua-parser cannot know is the email
client behind a pixel fetch: mail apps render in the system's web view and send its
user agent, and webmail loads images through the provider's proxy. `EMAIL_CLIENTS`
is the table of those tells, tried first; `core.robots.MACHINE_AGENTS` names the
machines (device `Bot`); ua-parser reads the rest.

Devices (`DEVICES`):
- `Desktop`, `Mobile`, `Tablet`: the reader's device, from the user agent.
- `Webmail`: read through a webmail provider's image proxy (Gmail, Yahoo Mail), in the
  browser or the provider's app: the proxy hides which, and the device.
- `Proxy`: fetched by a privacy proxy that tells nothing (Apple Mail Privacy
  Protection's bare `Mozilla/5.0`).
- `Bot`: a security scanner, crawler, script or link previewer.
- `Other`: anything else (no user agent, an unknown platform).

`describe` is cached (`functools.lru_cache`): a campaign's hits come from a few
hundred distinct user agents, so nearly every call is a dictionary look-up.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import ua_parser

from envoi.core import robots

DESKTOP = "Desktop"
MOBILE = "Mobile"
TABLET = "Tablet"
WEBMAIL = "Webmail"
PROXY = "Proxy"
BOT = "Bot"
OTHER = "Other"
DEVICES: tuple[str, ...] = (DESKTOP, MOBILE, TABLET, WEBMAIL, PROXY, BOT, OTHER)

USER_AGENT_READ = 500  # characters read: as many as an event keeps
CACHE_SIZE = 8192


@dataclass(frozen=True)
class Client:
    """Who fetched: `client` ("Gmail", "Outlook", "Chrome"), `device` (one of
    `DEVICES`) and `os` ("Android", "iOS", "Windows", "macOS"); "Other" when unknown."""

    client: str
    device: str
    os: str


UNKNOWN = Client(OTHER, OTHER, OTHER)


@dataclass(frozen=True)
class MailClient:
    """A row of `EMAIL_CLIENTS`. `device` and `os` None: read from the user agent's
    platform (ua-parser)."""

    pattern: str
    client: str
    device: str | None = None
    os: str | None = None


# Case-sensitive regular expressions searched in the user agent; the first row that
# matches names the client. Rows whose tell is only the shape of a web view's user
# agent (Apple Mail, Samsung Email) name the mail app that renders in that web view by
# default: another app could send the same, but few other apps load a mail's pixel.
EMAIL_CLIENTS: tuple[MailClient, ...] = (
    # Webmail image proxies: the user agent is the proxy's (Gmail's claims Windows XP).
    MailClient(r"GoogleImageProxy|via ggpht\.com", "Gmail", WEBMAIL, OTHER),
    MailClient(r"YahooMailProxy|YahooCacheSystem", "Yahoo Mail", WEBMAIL, OTHER),
    MailClient(r"HeyImageProxy", "HEY", WEBMAIL, OTHER),
    # Apple Mail Privacy Protection's proxies send the product token alone.
    MailClient(r"^Mozilla/5\.0$", "Apple Mail", PROXY, OTHER),
    # Outlook: the mobile apps name themselves; the Windows desktop application adds
    # `Microsoft Outlook 16.0.x; ms-office; MSOffice 16` to its Internet Explorer or
    # Word rendering engine's user agent, or sends `Microsoft Office/16.0 (...)`.
    MailClient(r"Outlook-iOS", "Outlook", MOBILE, "iOS"),
    MailClient(r"Outlook-Android", "Outlook", MOBILE, "Android"),
    MailClient(r"Microsoft Outlook|Microsoft Office/|\bms-office\b|\bMSOffice \d", "Outlook"),
    MailClient(r"Thunderbird/", "Thunderbird"),
    MailClient(r"Airmail", "Airmail"),
    MailClient(r"Superhuman", "Superhuman"),
    # Windows 10's Mail app renders in the system's UWP web view (`WebView/3.0`).
    MailClient(r"Windows NT 10\.0;[^)]*WebView/3\.0\).*Edge/", "Windows Mail", DESKTOP, "Windows"),
    # Mail apps that name themselves, when they do.
    MailClient(r"SamsungEmail|com\.samsung\.android\.email", "Samsung Email"),
    MailClient(r"MailRuMail|Mail\.Ru ?Agent|ru\.mail\.mailapp", "Mail.ru Mail"),
    MailClient(r"YandexMail|ru\.yandex\.mail", "Yandex Mail"),
    MailClient(r"OrangeMail|Orange Mail|com\.orange\.mail", "Orange Mail"),
    # Samsung Email is the mail app of Samsung's phones and renders in Android's web
    # view (`; wv)`) with its user agent unchanged (Gmail's app goes through Gmail's
    # image proxy instead; the in-app browsers of Instagram or Facebook append their
    # own tokens, which the `$` leaves out).
    MailClient(
        r"Android [\d.]+; (?:SAMSUNG )?SM-[A-Z0-9]+[^)]*; wv\) AppleWebKit/[\d.]+ "
        r"\(KHTML, like Gecko\) Version/[\d.]+ (?:Chrome/[\d.]+ )?(?:Mobile )?Safari/[\d.]+$",
        "Samsung Email",
    ),
    # Apple Mail: WebKit with no browser after it (Safari adds `Version/... Safari/...`).
    MailClient(
        r"^Mozilla/5\.0 \(Macintosh;[^)]*\) AppleWebKit/[\d.]+ \(KHTML, like Gecko\)$",
        "Apple Mail",
        DESKTOP,
        "macOS",
    ),
    MailClient(
        r"^Mozilla/5\.0 \((?:iPhone|iPod)[^)]*\) AppleWebKit/[\d.]+ \(KHTML, like Gecko\)"
        r"(?: Mobile/\w+)?$",
        "Apple Mail",
        MOBILE,
        "iOS",
    ),
    MailClient(
        r"^Mozilla/5\.0 \(iPad[^)]*\) AppleWebKit/[\d.]+ \(KHTML, like Gecko\)(?: Mobile/\w+)?$",
        "Apple Mail",
        TABLET,
        "iOS",
    ),
)

_MAIL_CLIENTS = tuple((re.compile(row.pattern), row) for row in EMAIL_CLIENTS)

# ua-parser's OS families, renamed where the vendor's current name differs.
_OS_NAMES = {"Mac OS X": "macOS"}
_MOBILE_OSES = frozenset(
    {"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Symbian OS", "Tizen"}
)
_DESKTOP_OSES = frozenset(
    {
        "Windows",
        "Mac OS X",
        "Linux",
        "Ubuntu",
        "Debian",
        "Fedora",
        "Red Hat",
        "SUSE",
        "Mint",
        "Chrome OS",
        "ChromeOS",
        "FreeBSD",
        "OpenBSD",
        "NetBSD",
    }
)
# `Tablet PC 2.0` is a Windows PC with a pen, not a tablet.
_TABLET = re.compile(r"iPad|Tablet(?! PC)|Kindle|Silk/|PlayBook")


def _device(user_agent: str, os_family: str, device_family: str) -> str:
    if device_family == "Spider":
        return BOT
    if _TABLET.search(user_agent):
        return TABLET
    if os_family == "Android":
        # Android phones' browsers write `Mobile`; tablets' leave it out.
        return MOBILE if "Mobile" in user_agent else TABLET
    if os_family in _MOBILE_OSES or "Mobi" in user_agent:
        return MOBILE
    if os_family in _DESKTOP_OSES:
        return DESKTOP
    return OTHER


def _read(user_agent: str) -> Client:
    parsed = ua_parser.parse(user_agent)
    browser = parsed.user_agent.family if parsed.user_agent else OTHER
    os_family = parsed.os.family if parsed.os else OTHER
    device_family = parsed.device.family if parsed.device else OTHER
    os_name = _OS_NAMES.get(os_family, os_family)
    for pattern, row in _MAIL_CLIENTS:
        if pattern.search(user_agent):
            return Client(
                row.client,
                row.device or _device(user_agent, os_family, device_family),
                row.os or os_name,
            )
    machine = robots.machine_agent(user_agent)
    if machine is not None:
        # A crawler caught by its shape is better named by ua-parser (Googlebot ...).
        generic = machine.name == robots.CRAWLER and browser != OTHER
        return Client(browser if generic else machine.name, BOT, os_name)
    return Client(browser, _device(user_agent, os_family, device_family), os_name)


@functools.lru_cache(maxsize=CACHE_SIZE)
def describe(user_agent: str) -> Client:
    """The email client, device and OS a user agent names; `UNKNOWN` when it names
    none. Never raises: a hit must be recorded whatever its header holds."""
    agent = user_agent[:USER_AGENT_READ].strip()
    if not agent:
        return UNKNOWN
    try:
        return _read(agent)
    except Exception:  # ua-parser on a header crafted to break it: still a hit
        return UNKNOWN


def warm() -> None:
    """Load ua-parser's rules now (about 0.2 s) rather than on the first hit."""
    describe("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36")
