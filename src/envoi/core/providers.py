"""Mailbox providers: which company hosts a recipient domain (pure, no DNS).

Statistics group recipients "by provider" (seed 000: Microsoft = outlook.fr,
outlook.com, hotmail.fr ...) and routing rules may pick a router per provider, so the
same table answers both. A provider is a short lowercase id (`microsoft`, `google`);
`PROVIDERS` maps each id to the name a person reads.

Two kinds of entries:
- exact domains (`msn.com`, `wanadoo.fr`, `163.com`);
- brands whose mail domain exists in many countries (`hotmail.co.uk`, `yahoo.com.br`,
  `gmx.at`): the brand label followed by a country or generic suffix of at most two
  short labels. `hotmail.example.com` is not Microsoft's: `example` is no suffix.

Domains hosted at a provider under their own name (a company on Google Workspace) are
known through their MX records: `MX_HOSTS` maps the host names providers receive mail
on to the provider (`provider_of_mx`); the DNS lookup itself is I/O and lives in
`eventstore.providers`.

The domains these tables, routing rules and recipients' addresses are compared in
have one form, `normalize_domain`: lower case and Unicode (U-labels), as
`core.identity.normalize_email` stores addresses. `ascii_domain` gives the IDNA
(`xn--`) form SMTP envelopes, headers and DNS need. Both use the `idna` library
(IDNA 2008 with UTS 46 mapping), the one email-validator normalises addresses with,
so a domain never changes between its two forms (Python's own `idna` codec is IDNA
2003, which turns `straße.de` into the different domain `strasse.de`).
"""

from __future__ import annotations

from functools import lru_cache

import idna

# Provider id -> display name. Every id used below is listed here.
PROVIDERS: dict[str, str] = {
    "microsoft": "Microsoft",
    "google": "Google",
    "yahoo": "Yahoo",
    "aol": "AOL",
    "apple": "Apple",
    "proton": "Proton",
    "zoho": "Zoho",
    "fastmail": "Fastmail",
    "tutanota": "Tuta",
    "gmx": "GMX",
    "webde": "WEB.DE",
    "tonline": "T-Online",
    "freenet": "freenet",
    "posteo": "Posteo",
    "mailbox_org": "mailbox.org",
    "orange": "Orange",
    "free": "Free",
    "sfr": "SFR",
    "laposte": "La Poste",
    "bouygues": "Bouygues Telecom",
    "libero": "Libero",
    "virgilio": "Virgilio",
    "tiscali": "Tiscali",
    "aruba": "Aruba",
    "telefonica": "Telefónica",
    "seznam": "Seznam",
    "wp": "Wirtualna Polska",
    "onet": "Onet",
    "interia": "Interia",
    "o2": "O2",
    "mailru": "Mail.ru",
    "yandex": "Yandex",
    "rambler": "Rambler",
    "ukrnet": "ukr.net",
    "qq": "Tencent QQ",
    "netease": "NetEase (163)",
    "sina": "Sina",
    "sohu": "Sohu",
    "naver": "Naver",
    "daum": "Daum (Kakao)",
    "rediff": "Rediffmail",
    "comcast": "Comcast (Xfinity)",
    "att": "AT&T",
    "charter": "Charter (Spectrum)",
    "cox": "Cox",
    "verizon": "Verizon",
    "earthlink": "EarthLink",
    "bt": "BT",
    "sky": "Sky",
    "virginmedia": "Virgin Media",
    "talktalk": "TalkTalk",
    "shaw": "Shaw",
    "rogers": "Rogers",
    "bell": "Bell",
    "telstra": "Telstra (BigPond)",
    "optus": "Optus",
    "uol": "UOL",
    "terra": "Terra",
    "bol": "BOL",
    "skynet": "Proximus (Skynet)",
    "telenet": "Telenet",
    "ziggo": "Ziggo",
    "kpn": "KPN",
    "bluewin": "Swisscom (Bluewin)",
    "hey": "HEY",
    # Hosting companies: known by the MX hosts of the domains they keep mailboxes for.
    "ionos": "IONOS (1&1)",
    "strato": "Strato",
    "ovh": "OVHcloud",
    "gandi": "Gandi",
    "infomaniak": "Infomaniak",
    "godaddy": "GoDaddy",
    "rackspace": "Rackspace",
    "namecheap": "Namecheap",
    "alibaba": "Alibaba Mail",
}

# Brand label -> provider, for `<brand>.<suffix>` in any country.
_BRANDS: dict[str, str] = {
    "outlook": "microsoft",
    "hotmail": "microsoft",
    "live": "microsoft",
    "windowslive": "microsoft",
    "msn": "microsoft",
    "yahoo": "yahoo",
    "ymail": "yahoo",
    "rocketmail": "yahoo",
    "aol": "aol",
    "gmx": "gmx",
    "yandex": "yandex",
    "protonmail": "proton",
    "proton": "proton",
    "zoho": "zoho",
    "zohomail": "zoho",
    "tutanota": "tutanota",
    "tuta": "tutanota",
    "libero": "libero",
    "tiscali": "tiscali",
    "orange": "orange",
    "icloud": "apple",
    "seznam": "seznam",
    "naver": "naver",
    "rediffmail": "rediff",
    "terra": "terra",
    "uol": "uol",
}

# Exact domains.
_DOMAINS: dict[str, str] = {
    # Microsoft (the brands above cover outlook.*, hotmail.*, live.* ...).
    "passport.com": "microsoft",
    # Google
    "gmail.com": "google",
    "googlemail.com": "google",
    # Apple
    "me.com": "apple",
    "mac.com": "apple",
    # AOL / Verizon media
    "aim.com": "aol",
    "cs.com": "aol",
    "love.com": "aol",
    "wow.com": "aol",
    "games.com": "aol",
    "verizon.net": "verizon",
    # Proton, Fastmail, others privacy-minded
    "pm.me": "proton",
    "fastmail.com": "fastmail",
    "fastmail.fm": "fastmail",
    "fastmail.net": "fastmail",
    "messagingengine.com": "fastmail",
    "keemail.me": "tutanota",
    "tutamail.com": "tutanota",
    "posteo.de": "posteo",
    "posteo.net": "posteo",
    "mailbox.org": "mailbox_org",
    "hey.com": "hey",
    # Germany
    "web.de": "webde",
    "email.de": "webde",
    "t-online.de": "tonline",
    "magenta.de": "tonline",
    "freenet.de": "freenet",
    "caramail.com": "gmx",
    "mail.com": "gmx",
    "email.com": "gmx",
    # France
    "wanadoo.fr": "orange",
    "voila.fr": "orange",
    "free.fr": "free",
    "aliceadsl.fr": "free",
    "libertysurf.fr": "free",
    "online.fr": "free",
    "sfr.fr": "sfr",
    "neuf.fr": "sfr",
    "cegetel.net": "sfr",
    "club-internet.fr": "sfr",
    "9online.fr": "sfr",
    "noos.fr": "sfr",
    "numericable.fr": "sfr",
    "laposte.net": "laposte",
    "bbox.fr": "bouygues",
    # Italy
    "inwind.it": "libero",
    "iol.it": "libero",
    "blu.it": "libero",
    "virgilio.it": "virgilio",
    "alice.it": "virgilio",
    "tim.it": "virgilio",
    "aruba.it": "aruba",
    "pec.it": "aruba",
    # Spain
    "telefonica.net": "telefonica",
    "movistar.es": "telefonica",
    # Central and Eastern Europe
    "email.cz": "seznam",
    "post.cz": "seznam",
    "wp.pl": "wp",
    "o2.pl": "wp",
    "onet.pl": "onet",
    "op.pl": "onet",
    "vp.pl": "onet",
    "poczta.onet.pl": "onet",
    "interia.pl": "interia",
    "interia.eu": "interia",
    "poczta.fm": "interia",
    "centrum.cz": "o2",
    "atlas.cz": "o2",
    # Russia and neighbours
    "mail.ru": "mailru",
    "bk.ru": "mailru",
    "inbox.ru": "mailru",
    "list.ru": "mailru",
    "internet.ru": "mailru",
    "mail.ua": "mailru",
    "ya.ru": "yandex",
    "narod.ru": "yandex",
    "rambler.ru": "rambler",
    "lenta.ru": "rambler",
    "autorambler.ru": "rambler",
    "myrambler.ru": "rambler",
    "ro.ru": "rambler",
    "rambler.ua": "rambler",
    "ukr.net": "ukrnet",
    # China, Korea, India
    "qq.com": "qq",
    "vip.qq.com": "qq",
    "foxmail.com": "qq",
    "163.com": "netease",
    "126.com": "netease",
    "yeah.net": "netease",
    "188.com": "netease",
    "vip.163.com": "netease",
    "vip.126.com": "netease",
    "sina.com": "sina",
    "sina.cn": "sina",
    "vip.sina.com": "sina",
    "sohu.com": "sohu",
    "hanmail.net": "daum",
    "daum.net": "daum",
    "kakao.com": "daum",
    "rediff.com": "rediff",
    # North America
    "comcast.net": "comcast",
    "xfinity.com": "comcast",
    "att.net": "att",
    "sbcglobal.net": "att",
    "bellsouth.net": "att",
    "pacbell.net": "att",
    "swbell.net": "att",
    "flash.net": "att",
    "prodigy.net": "att",
    "ameritech.net": "att",
    "charter.net": "charter",
    "spectrum.net": "charter",
    "roadrunner.com": "charter",
    "rr.com": "charter",
    "twc.com": "charter",
    "cox.net": "cox",
    "earthlink.net": "earthlink",
    "mindspring.com": "earthlink",
    "shaw.ca": "shaw",
    "rogers.com": "rogers",
    "sympatico.ca": "bell",
    "bell.net": "bell",
    # United Kingdom
    "btinternet.com": "bt",
    "btopenworld.com": "bt",
    "talk21.com": "bt",
    "sky.com": "sky",
    "virginmedia.com": "virginmedia",
    "blueyonder.co.uk": "virginmedia",
    "ntlworld.com": "virginmedia",
    "talktalk.net": "talktalk",
    "tiscali.co.uk": "talktalk",
    # Australia
    "bigpond.com": "telstra",
    "bigpond.net.au": "telstra",
    "telstra.com": "telstra",
    "optusnet.com.au": "optus",
    # Brazil
    "bol.com.br": "bol",
    # Benelux and Switzerland
    "skynet.be": "skynet",
    "proximus.be": "skynet",
    "telenet.be": "telenet",
    "ziggo.nl": "ziggo",
    "home.nl": "ziggo",
    "planet.nl": "kpn",
    "kpnmail.nl": "kpn",
    "bluewin.ch": "bluewin",
}

# MX host suffixes -> provider, for a domain the tables above do not know (a company's
# own domain): a host matches an entry equal to it or ending in "." and the entry; the
# longer entry wins. One (suffix, provider) pair per line, unique (tests/
# test_providers_mx.py checks), each with the hosts it stands for. Only hosts whose
# company keeps the mailboxes are listed:
# - hosting companies that keep mailboxes (OVHcloud, IONOS, GoDaddy ...) are providers:
#   their servers filter and throttle the mail, as a mailbox provider's do;
# - security gateways (Proofpoint `pphosted.com`, Mimecast, Barracuda, Cisco
#   `iphmx.com`, Cloudmark `cloudfilter.net`) front mailboxes kept anywhere, and
#   forwarders (Cloudflare Email Routing, ImprovMX) pass mail on to another provider:
#   neither says who holds the mailbox, so they are not listed (the next MX host may be);
# - Amazon SES inbound (`inbound-smtp.REGION.amazonaws.com`) feeds applications as
#   often as WorkMail mailboxes: not listed either.
MX_HOSTS: tuple[tuple[str, str], ...] = (
    # Google Workspace: aspmx.l.google.com, alt1..4.aspmx.l.google.com, smtp.google.com
    # (newer tenants' single record); aspmx2..5.googlemail.com in older setups.
    ("google.com", "google"),
    ("googlemail.com", "google"),
    # Microsoft 365 (TENANT.mail.protection.outlook.com), Outlook.com's own domains
    # (*.olc.protection.outlook.com), older Exchange Online (*.mail.eo.outlook.com).
    ("outlook.com", "microsoft"),
    # Microsoft 365 with DNSSEC and DANE inbound (TENANT.o-v1.mx.microsoft, since 2024).
    ("mx.microsoft", "microsoft"),
    # Yahoo (mta5.am0.yahoodns.net), Yahoo Small Business (mx-biz.mail.am0.yahoodns.net).
    # AOL's own domains point there too: the domain table says `aol` for them.
    ("yahoodns.net", "yahoo"),
    # iCloud+ custom domains (mx01.mail.icloud.com, mx02.mail.icloud.com).
    ("mail.icloud.com", "apple"),
    # Yandex 360 for business (mx.yandex.net), older setups (mx.yandex.ru).
    ("yandex.net", "yandex"),
    ("yandex.ru", "yandex"),
    # Mail.ru for business (emx.mail.ru).
    ("mail.ru", "mailru"),
    # Zoho Mail, one name per data centre (mx.zoho.com, mx2.zoho.eu ...).
    ("zoho.com", "zoho"),
    ("zoho.eu", "zoho"),
    ("zoho.in", "zoho"),
    ("zoho.com.au", "zoho"),
    ("zoho.jp", "zoho"),
    ("zoho.sa", "zoho"),
    ("zohocloud.ca", "zoho"),
    # Proton (mail.protonmail.ch, mailsec.protonmail.ch).
    ("protonmail.ch", "proton"),
    # Fastmail (in1-smtp.messagingengine.com).
    ("messagingengine.com", "fastmail"),
    # Tuta (mail.tutanota.de).
    ("tutanota.de", "tutanota"),
    # mailbox.org (mxext1.mailbox.org).
    ("mailbox.org", "mailbox_org"),
    # HEY for Domains (work-mx.app.hey.com).
    ("hey.com", "hey"),
    # United Internet's mail brands: GMX (mx00.emig.gmx.net, mx00.gmx.com), mail.com
    # (mx00.mail.com), WEB.DE (mx-ha03.web.de).
    ("gmx.net", "gmx"),
    ("gmx.com", "gmx"),
    ("mail.com", "gmx"),
    ("web.de", "webde"),
    # United Internet's hosting, IONOS: mx00.ionos.de and one name per country, and the
    # 1&1 names older domains still point at (mx00.kundenserver.de, mx00.1and1.co.uk).
    ("ionos.de", "ionos"),
    ("ionos.com", "ionos"),
    ("ionos.co.uk", "ionos"),
    ("ionos.fr", "ionos"),
    ("ionos.es", "ionos"),
    ("ionos.it", "ionos"),
    ("ionos.mx", "ionos"),
    ("ionos.ca", "ionos"),
    ("kundenserver.de", "ionos"),
    ("1and1.com", "ionos"),
    ("1and1.co.uk", "ionos"),
    # Strato (smtpin.rzone.de).
    ("rzone.de", "strato"),
    # Deutsche Telekom (mx00.t-online.de).
    ("t-online.de", "tonline"),
    # France: Orange (smtp-in.orange.fr), Free (mx1.free.fr), SFR (mx1.sfr.fr), La Poste.
    ("orange.fr", "orange"),
    ("free.fr", "free"),
    ("sfr.fr", "sfr"),
    ("laposte.net", "laposte"),
    # OVHcloud's MX Plan and hosted Exchange (mx1.mail.ovh.net, mx1.mail.ovh.ca): a
    # hosting company, but the mailboxes are its own (see above).
    ("mail.ovh.net", "ovh"),
    ("mail.ovh.ca", "ovh"),
    # Gandi (spool.mail.gandi.net, fb.mail.gandi.net).
    ("mail.gandi.net", "gandi"),
    # Infomaniak (mta-gw.infomaniak.ch).
    ("infomaniak.ch", "infomaniak"),
    # Swisscom (mxbw.bluewin.ch).
    ("bluewin.ch", "bluewin"),
    # Aruba hosting, Italy (mx.aruba.it).
    ("aruba.it", "aruba"),
    # Seznam Email Profi (mx1.seznam.cz).
    ("seznam.cz", "seznam"),
    # China: Tencent (mx1.qq.com; Exmail mxbiz1.qq.com), NetEase (163mx01.mxmail.
    # netease.com, qiye163mx01.mxmail.netease.com), Alibaba Mail (mxw.mxhichina.com).
    ("qq.com", "qq"),
    ("163.com", "netease"),
    ("netease.com", "netease"),
    ("mxhichina.com", "alibaba"),
    # Korea, India: Naver (mx1.naver.com), Rediffmail Pro (mx.rediffmail.com).
    ("naver.com", "naver"),
    ("rediffmail.com", "rediff"),
    # North America: Comcast (mx1a1.comcast.net), AT&T (al-ip4-mx-vip1.prodigy.net),
    # Rackspace (mx1.emailsrvr.com), GoDaddy Workspace Email (smtp.secureserver.net,
    # mailstore1.secureserver.net), Namecheap Private Email (mx1.privateemail.com).
    ("comcast.net", "comcast"),
    ("prodigy.net", "att"),
    ("att.net", "att"),
    ("emailsrvr.com", "rackspace"),
    ("secureserver.net", "godaddy"),
    ("privateemail.com", "namecheap"),
)
_MX_SUFFIXES: dict[str, str] = dict(MX_HOSTS)

# Labels a country or generic suffix is made of, besides two-letter country codes
# (`co.uk`, `com.br`, `com.au`, `co.jp`, `net`, `de` ...).
_SUFFIX_LABELS = frozenset({"com", "net", "org", "co", "ne", "or", "gov", "edu", "ac"})


def _is_suffix(labels: list[str]) -> bool:
    """Whether `labels` look like a public suffix: 1 or 2 labels, each a ccTLD or generic."""
    if not 1 <= len(labels) <= 2:
        return False
    return all((len(label) == 2 and label.isalpha()) or label in _SUFFIX_LABELS for label in labels)


def provider_of(domain: str) -> str | None:
    """The provider id hosting `domain` (`"hotmail.fr"` -> `"microsoft"`), None if unknown."""
    name = domain.strip().rstrip(".").lower()
    if name in _DOMAINS:
        return _DOMAINS[name]
    labels = name.split(".")
    brand = _BRANDS.get(labels[0])
    if brand is not None and _is_suffix(labels[1:]):
        return brand
    return None


def provider_of_mx(host: str) -> str | None:
    """The provider receiving mail on MX host `host` (`"aspmx.l.google.com."` ->
    `"google"`), None if `MX_HOSTS` does not know it."""
    labels = host.strip().rstrip(".").lower().split(".")
    for start in range(len(labels) - 1):  # the longest suffix first, at least 2 labels
        provider = _MX_SUFFIXES.get(".".join(labels[start:]))
        if provider is not None:
            return provider
    return None


def provider_name(provider: str) -> str:
    """The name a person reads for a provider id (the id itself if unknown)."""
    return PROVIDERS.get(provider, provider)


@lru_cache(maxsize=4096)
def normalize_domain(domain: str) -> str:
    """`domain` lower-cased, in Unicode form, without a trailing dot; ValueError if it
    is not a host name of at least two labels (`Gmail.COM.` -> `gmail.com`,
    `xn--exmple-cua.com` -> `exämple.com`)."""
    text = domain.strip().rstrip(".").lower()
    try:
        ascii_form = idna.encode(text, uts46=True, std3_rules=True)
        unicode_form: str = idna.decode(ascii_form)
    except (idna.IDNAError, UnicodeError) as exc:
        raise ValueError(f"{domain!r} is not a domain name: {exc}") from None
    if "." not in unicode_form:
        raise ValueError(f"{domain!r} is not a domain name: it has one label")
    return unicode_form


@lru_cache(maxsize=4096)
def ascii_domain(domain: str) -> str:
    """The IDNA (`xn--`) form of `domain` (ASCII domains are returned as they are);
    ValueError if it cannot be encoded."""
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise ValueError(f"{domain!r} has no IDNA form: {exc}") from None
