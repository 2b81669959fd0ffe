"""The bounce classifier (`core.bounces`) on real replies of real providers and MTAs.

Each case is what a receiving server said, as delivery sees it in an SMTP session or
as a DSN reports it (a DSN may give a status and no reply code: code None), and what
an operator should read from it: the fine-grained reason, seed 001's class, seed
003's error code, and whether it is a hard bounce.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from envoi.core.bounces import (
    BOUNCE_CLASSES,
    BOUNCE_CLASSES_BY_REASON,
    ERROR_CODES,
    ERROR_CODES_BY_REASON,
    PATTERNS,
    QUARANTINE_REASONS,
    REASONS,
    Verdict,
    classify,
    no_answer,
    verdict,
)


class Case(NamedTuple):
    provider: str
    code: int | None
    status: str | None
    text: str
    reason: str
    bounce_class: str
    error_code: int
    hard: bool


CASES: list[Case] = [
    # --- Gmail
    Case(
        "gmail",
        550,
        "5.1.1",
        "The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address for typos or unnecessary spaces. "
        "https://support.google.com/mail/?p=NoSuchUser 41be03b00d2f7-5e0b3a1c4f1si123",
        "user_unknown",
        "user_unknown",
        11,
        True,
    ),
    Case(
        "gmail",
        550,
        "5.2.1",
        "The email account that you tried to reach is disabled. "
        "https://support.google.com/mail/?p=DisabledUser",
        "mailbox_inactive",
        "user_recycled",
        13,
        True,
    ),
    Case(
        "gmail",
        552,
        "5.2.2",
        "The email account that you tried to reach is over quota. Please direct the "
        "recipient to https://support.google.com/mail/?p=OverQuotaPerm",
        "mailbox_full",
        "mailbox_full",
        15,
        False,  # a full mailbox is soft, even under a 5xx
    ),
    Case(
        "gmail",
        452,
        "4.2.2",
        "The email account that you tried to reach is over quota. Please direct the "
        "recipient to https://support.google.com/mail/?p=OverQuotaTemp",
        "mailbox_full",
        "mailbox_full",
        15,
        False,
    ),
    Case(
        "gmail",
        550,
        "5.7.26",
        "This mail is unauthenticated, which poses a security risk to the sender and "
        "Gmail users, and has been blocked. The sender must authenticate with at least "
        "one of SPF or DKIM. For this message, DKIM checks did not pass and SPF check "
        "for [example.com] did not pass with ip: [203.0.113.7].",
        "policy",
        "block_other",
        17,
        False,
    ),
    Case(
        "gmail",
        550,
        "5.7.26",
        "Unauthenticated email from example.com is not accepted due to domain's DMARC "
        "policy. Please contact the administrator of example.com domain.",
        "policy",
        "block_other",
        17,
        False,
    ),
    Case(
        "gmail",
        550,
        "5.7.25",
        "[203.0.113.7] The IP address sending this message does not have a PTR record "
        "setup, or the corresponding forward DNS entry does not point to the sending IP.",
        "policy",
        "block_other",
        17,
        False,
    ),
    Case(
        "gmail",
        450,
        "4.2.1",
        "The user you are trying to contact is receiving mail at a rate that prevents "
        "additional messages from being delivered. Please resend your message at a later "
        "time. https://support.google.com/mail/?p=ReceivingRate",
        "rate_limited",
        "other_soft",
        46,
        False,
    ),
    Case(
        "gmail",
        550,
        "5.7.1",
        "[203.0.113.7 12] Our system has detected that this message is likely unsolicited "
        "mail. To reduce the amount of spam sent to Gmail, this message has been blocked.",
        "content_rejected",
        "block_content",
        14,
        False,
    ),
    Case(
        "gmail",
        421,
        "4.7.28",
        "[203.0.113.7 15] Our system has detected an unusual rate of unsolicited mail "
        "originating from your IP address. To protect our users from spam, mail sent from "
        "your IP address has been temporarily rate limited.",
        "reputation",
        "block_other",
        113,
        False,
    ),
    Case(
        "gmail",
        552,
        "5.3.4",
        "Your message exceeded Google's message size limits. Please visit "
        "https://support.google.com/mail/?p=MaxSizeError to view our size guidelines.",
        "message_too_big",
        "other_hard",
        45,
        True,
    ),
    Case(
        "gmail",
        452,
        "4.5.3",
        "Your message has too many recipients. For more information regarding Google's "
        "sending limits, visit https://support.google.com/mail/?p=TooManyRecipientsError",
        "rate_limited",
        "other_soft",
        46,
        False,
    ),
    Case(
        "gmail",
        421,
        "4.3.0",
        "Temporary System Problem. Try again later (10).",
        "system_error",
        "other_soft",
        46,
        False,
    ),
    # --- Microsoft (Outlook.com, Microsoft 365)
    Case(
        "microsoft",
        550,
        "5.5.0",
        "Requested action not taken: mailbox unavailable (S2017062302). "
        "[AM4PEPF00025F97.EURPRD83.prod.outlook.com]",
        "user_unknown",
        "user_unknown",
        11,
        True,
    ),
    Case(
        "microsoft",
        550,
        "5.1.10",
        "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        "user_unknown",
        "user_unknown",
        11,
        True,
    ),
    Case(
        "microsoft",
        550,
        "5.4.1",
        "Recipient address rejected: Access denied. AS(201806281) "
        "[DB5EUR03FT012.eop-EUR03.prod.protection.outlook.com]",
        "user_unknown",
        "user_unknown",
        11,
        True,
    ),
    Case(
        "microsoft",
        550,
        "5.7.1",
        "Unfortunately, messages from [203.0.113.7] weren't sent. Please contact your "
        "Internet service provider since part of their network is on our block list "
        "(S3150). You can also refer your provider to http://mail.live.com/mail/"
        "troubleshooting.aspx#errors.",
        "reputation",
        "block_other",
        113,
        False,
    ),
    Case(
        "microsoft",
        550,
        "5.7.1",
        "Service unavailable, Client host [203.0.113.7] blocked using Spamhaus. To "
        "request removal from this list see https://www.spamhaus.org/query/ip/203.0.113.7 "
        "AS(1450) [BN8NAM12FT045.eop-nam12.prod.protection.outlook.com]",
        "reputation",
        "block_other",
        113,
        False,
    ),
    Case(
        "microsoft",
        550,
        "5.7.606",
        "Access denied, banned sending IP [203.0.113.7]. To request removal from this "
        "list please visit https://sender.office.com/ and follow the directions.",
        "reputation",
        "block_other",
        113,
        False,
    ),
    Case(
        "microsoft",
        550,
        "5.7.509",
        "Access denied, sending domain example.com does not pass DMARC verification and "
        "has a DMARC policy of reject.",
        "policy",
        "block_other",
        17,
        False,
    ),
    Case(
        "microsoft",
        451,
        "4.7.500",
        "Server busy. Please try again later from [203.0.113.7]. (S77714) "
        "[VI1EUR04FT043.eop-eur04.prod.protection.outlook.com]",
        "system_error",
        "other_soft",
        46,
        False,
    ),
    Case(
        "microsoft",
        554,
        "5.2.0",
        "STOREDRV.Deliver.Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded",
        "mailbox_full",
        "mailbox_full",
        15,
        False,
    ),
    Case(
        "microsoft",
        550,
        "5.4.1",
        "Relay Access Denied ATTR35 [CO1NAM11FT020.eop-nam11.prod.protection.outlook.com]",
        "relaying_denied",
        "block_other",
        45,
        False,
    ),
    Case(
        "gmail",
        530,
        "5.7.0",
        "Must issue a STARTTLS command first. 41be03b00d2f7-5e0b3a1c4f1si123 - gsmtp",
        "policy",
        "block_other",
        7,
        False,
    ),
    # --- Yahoo / AOL
    Case(
        "yahoo",
        554,
        None,
        "delivery error: dd This user doesn't have a yahoo.com account (jane@yahoo.com) "
        "[0] - mta4463.mail.bf1.yahoo.com",
        "user_unknown",
        "user_unknown",
        11,
        True,
    ),
    Case(
        "yahoo",
        552,
        None,
        "1 Requested mail action aborted, mailbox not found",
        "user_unknown",
        "user_unknown",
        11,
        True,
    ),
    Case(
        "yahoo",
        554,
        None,
        "30 Sorry, your message to jane@yahoo.com cannot be delivered. This mailbox is "
        "disabled (554.30).",
        "mailbox_inactive",
        "user_recycled",
        13,
        True,
    ),
    Case(
        "yahoo",
        421,
        "4.7.0",
        "[TSS04] Messages from 203.0.113.7 temporarily deferred due to unexpected volume "
        "or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
        "reputation",
        "block_other",
        113,
        False,
    ),
    Case(
        "yahoo",
        553,
        "5.7.1",
        "[BL21] Connections will not be accepted from 203.0.113.7, because the ip is in "
        "Spamhaus's list; see https://postmaster.yahooinc.com/error-codes",
        "reputation",
        "block_other",
        113,
        False,
    ),
    Case(
        "yahoo",
        554,
        "5.7.9",
        "Message not accepted for policy reasons. See https://postmaster.yahooinc.com/error-codes",
        "policy",
        "block_other",
        45,
        False,
    ),
    Case(
        "yahoo",
        550,
        "5.7.9",
        "This mail has been blocked because the sender is unauthenticated. Yahoo requires "
        "all senders to authenticate with either SPF or DKIM.",
        "policy",
        "block_other",
        17,
        False,
    ),
    Case(
        "yahoo",
        451,
        None,
        "Message temporarily deferred - [160]",
        "rate_limited",
        "other_soft",
        111,  # a bare deferral: suspected greylisting
        False,
    ),
    # --- Apple iCloud
    Case(
        "apple",
        550,
        "5.1.1",
        "<jane@icloud.com>: user does not exist",
        "user_unknown",
        "user_unknown",
        11,
        True,
    ),
    Case(
        "apple",
        554,
        "5.7.1",
        "[CS01] Message rejected due to local policy. Please visit "
        "https://support.apple.com/en-us/HT204137",
        "policy",
        "block_other",
        45,
        False,
    ),
    Case(
        "apple",
        550,
        "5.7.1",
        "Your email was rejected due to having a domain present in the Spamhaus DBL -- "
        "see https://www.spamhaus.org/dbl/",
        "reputation",
        "block_other",
        113,
        False,
    ),
    Case(
        "apple",
        421,
        "4.7.1",
        "Messages to jane@icloud.com deferred due to excessive volume. Try again later - "
        "https://support.apple.com/en-us/HT204137",
        "rate_limited",
        "other_soft",
        46,
        False,
    ),
    Case(
        "apple",
        450,
        "4.2.2",
        "<jane@icloud.com>: user is overquota",
        "mailbox_full",
        "mailbox_full",
        15,
        False,
    ),
    # --- Orange (orange.fr, wanadoo.fr)
    Case(
        "orange",
        550,
        "5.1.1",
        "Adresse d au moins un destinataire invalide. Invalid recipient. OFR_416 [416]",
        "user_unknown",
        "user_unknown",
        11,
        True,
    ),
    Case(
        "orange",
        421,
        None,
        "mwinf5c77 ME Service refuse. Veuillez essayer plus tard. Service refused, please "
        "try later. OFR_999 [999]",
        "reputation",
        "block_other",
        113,
        False,
    ),
    Case(
        "orange",
        550,
        "5.7.1",
        "Service refuse. Veuillez essayer plus tard. Service refused, please try later. "
        "OFR_999 [999]",
        "reputation",
        "block_other",
        113,
        False,
    ),
    Case(
        "orange",
        421,
        None,
        "mwinf5c10 ME Trop de connexions, veuillez verifier votre configuration. Too many "
        "connections, slow down. OFR004_104 [104]",
        "rate_limited",
        "other_soft",
        46,
        False,
    ),
    Case(
        "orange",
        552,
        "5.2.2",
        "Boîte aux lettres pleine. Mailbox full. OFR_417 [417]",
        "mailbox_full",
        "mailbox_full",
        15,
        False,
    ),
    # --- Mail.ru
    Case(
        "mailru",
        550,
        None,
        "Message was not accepted -- invalid mailbox. Local mailbox jane@mail.ru is "
        "unavailable: user not found",
        "user_unknown",
        "user_unknown",
        11,
        True,
    ),
    Case(
        "mailru",
        550,
        None,
        "Message was not accepted -- invalid mailbox. Local mailbox jane@mail.ru is "
        "unavailable: account is disabled",
        "mailbox_inactive",
        "user_recycled",
        13,
        True,
    ),
    Case(
        "mailru",
        550,
        None,
        "spam message rejected. Please visit http://help.mail.ru/notspam-support/id?c=xyz "
        "or report details to abuse@corp.mail.ru. Error code: 5A3C8E ID: 0000000A",
        "content_rejected",
        "block_content",
        16,  # Mail.ru's own spam refusal, counted apart by seed 003
        False,
    ),
    # Mail.ru's relay refusing the sender's own account: not the recipient's mailbox.
    Case(
        "mailru",
        550,
        None,
        "message sending for this account is disabled",
        "policy",
        "block_other",
        45,
        False,
    ),
    # The same words come from Yandex too: without a Mail.ru link, plain spam (14).
    Case(
        "mailru",
        550,
        "5.7.1",
        "Message rejected under suspicion of SPAM",
        "content_rejected",
        "block_content",
        14,
        False,
    ),
    # --- Yandex
    Case(
        "yandex",
        550,
        "5.7.1",
        "No such user!",
        "user_unknown",
        "user_unknown",
        11,
        True,
    ),
    Case(
        "yandex",
        554,
        "5.7.1",
        "[2] Message rejected under suspicion of SPAM; https://ya.cc/1IrBc 1681391251-AbCdEfGh",
        "content_rejected",
        "block_content",
        14,
        False,
    ),
    Case(
        "yandex",
        550,
        "5.7.1",
        "Policy rejection on the target address",
        "mailbox_inactive",
        "user_recycled",
        13,
        True,
    ),
    Case(
        "yandex",
        552,
        "5.2.2",
        "Mailbox size limit exceeded",
        "mailbox_full",
        "mailbox_full",
        15,
        False,
    ),
    Case(
        "yandex",
        554,
        "5.7.1",
        "Blocked by spam statistics - see http://feedback.yandex.ru/?from=mail-rejects",
        "reputation",
        "block_other",
        113,
        False,
    ),
    # --- Postfix
    Case(
        "postfix",
        550,
        "5.1.1",
        "<nobody@example.com>: Recipient address rejected: User unknown in virtual mailbox table",
        "user_unknown",
        "user_unknown",
        11,
        True,
    ),
    Case(
        "postfix",
        450,
        "4.2.0",
        "<grey@example.com>: Recipient address rejected: Greylisted, see "
        "http://postgrey.schweikert.ch/help/example.com.html",
        "rate_limited",
        "other_soft",
        53,
        False,
    ),
    Case(
        "postfix",
        554,
        "5.7.1",
        "<x@example.org>: Relay access denied",
        "relaying_denied",
        "block_other",
        45,
        False,
    ),
    Case(
        "postfix",
        450,
        "4.7.1",
        "Client host rejected: cannot find your hostname, [203.0.113.7]",
        "policy",
        "block_other",
        17,
        False,
    ),
    Case(
        "postfix",
        553,
        "5.1.8",
        "<bounces@example.com>: Sender address rejected: Domain not found",
        "policy",
        "block_other",
        45,
        False,
    ),
    Case(
        "postfix",
        None,
        "5.4.4",
        "Host or domain name not found. Name service error for name=nowhere.example "
        "type=A: Host not found",
        "host_unknown",
        "user_unknown",
        6,
        True,
    ),
    Case(
        "postfix",
        None,
        "4.4.1",
        "connect to mx.example.com[198.51.100.1]:25: Connection timed out",
        "network_error",
        "block_timeout",
        44,
        False,
    ),
    Case(
        "postfix",
        None,
        "4.4.2",
        "lost connection with mx.example.com[198.51.100.1] while receiving the initial "
        "server greeting",
        "network_error",
        "block_timeout",
        9,
        False,
    ),
    Case(
        "postfix",
        None,
        "4.4.3",
        "Host or domain name not found. Name service error for name=example.com type=MX: "
        "Host not found, try again",
        "network_error",
        "other_soft",
        1,
        False,
    ),
    Case(
        "postfix",
        None,
        "5.0.0",
        "host mx.example.com[198.51.100.1] refused to talk to me: 554 mx.example.com No "
        "SMTP service here",
        "policy",
        "block_other",
        4,
        False,
    ),
    Case(
        "postfix",
        451,
        "4.3.0",
        "<x@example.com>: Temporary lookup failure",
        "system_error",
        "other_soft",
        46,
        False,
    ),
    Case(
        "postfix",
        552,
        "5.3.4",
        "Message size exceeds fixed limit",
        "message_too_big",
        "other_hard",
        45,
        True,
    ),
    # --- Exim
    Case("exim", 550, None, "Unrouteable address", "user_unknown", "user_unknown", 11, True),
    Case(
        "exim",
        550,
        None,
        "Administrative prohibition",
        "policy",
        "block_other",
        45,
        False,
    ),
    Case(
        "exim",
        550,
        None,
        "Verification failed for <bounces@example.com> Unrouteable address Sender verify failed",
        "policy",
        "block_other",
        45,
        False,
    ),
    Case(
        "exim",
        451,
        None,
        "Temporary local problem - please try later",
        "system_error",
        "other_soft",
        46,
        False,
    ),
    Case(
        "exim",
        None,
        None,
        "retry timeout exceeded",
        "expired",
        "block_timeout",
        51,
        False,
    ),
    # --- Sendmail and qmail (DSNs: a status, no reply code)
    Case(
        "sendmail",
        None,
        "4.4.7",
        "Cannot send message for 5 days",
        "expired",
        "block_timeout",
        51,
        False,
    ),
    Case(
        "sendmail",
        554,
        "5.0.0",
        "Service unavailable",
        "system_error",
        "other_hard",
        110,
        True,
    ),
    Case(
        "qmail",
        None,
        None,
        "Sorry, no mailbox here by that name. (#5.1.1)",
        "user_unknown",
        "user_unknown",
        11,
        True,
    ),
    Case(
        "qmail",
        None,
        None,
        "Sorry, I couldn't find any host named nowhere.example. (#5.1.2)",
        "host_unknown",
        "user_unknown",
        6,
        True,
    ),
    # --- RFC 3463 statuses alone, as DSNs give them
    Case("dsn", None, "5.1.6", "", "mailbox_inactive", "user_recycled", 13, True),
    Case("dsn", None, "5.7.17", "", "mailbox_inactive", "user_recycled", 13, True),
    Case("dsn", None, "5.1.10", "", "host_unknown", "user_unknown", 6, True),
    Case("dsn", None, "4.4.5", "", "rate_limited", "other_soft", 46, False),
    Case("dsn", None, "5.6.0", "", "content_rejected", "block_content", 14, False),
    Case("dsn", None, "5.7.0", "", "policy", "block_other", 45, False),
    Case("dsn", None, "5.0.0", "", "undetermined", "other_hard", 45, True),
    Case("dsn", None, "4.0.0", "", "undetermined", "other_soft", 0, False),
    # --- a 4xx "user unknown": a lazy recipient check, never a hard bounce
    Case(
        "postfix",
        450,
        "4.1.1",
        "<x@example.com>: Recipient address rejected: unverified address",
        "user_unknown",
        "user_unknown",
        11,
        False,
    ),
    Case(
        "postfix",
        454,
        "4.7.5",
        "TLS handshake failure: certificate verify failed",
        "network_error",
        "other_soft",
        7,
        False,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.provider}-{c.code}-{c.status}" for c in CASES])
def test_real_replies(case: Case) -> None:
    got = classify(case.code, case.status, case.text)
    expected = (case.reason, case.bounce_class, case.error_code, case.hard)
    assert (got.reason, got.bounce_class, got.error_code, got.hard) == expected


def test_the_corpus_covers_every_reason_class_and_provider() -> None:
    assert len(CASES) >= 60
    # Every reason but `undetermined` comes from some real reply.
    assert {c.reason for c in CASES} == set(REASONS)
    assert {c.bounce_class for c in CASES} == set(BOUNCE_CLASSES)
    providers = {"gmail", "microsoft", "yahoo", "apple", "orange", "mailru", "yandex"}
    assert providers <= {c.provider for c in CASES}
    assert {c.error_code for c in CASES} >= {0, 1, 4, 6, 7, 9, 11, 13, 14, 15, 16, 17}


def test_the_tables_name_every_reason_and_only_seed_values() -> None:
    sides = {(reason, permanent) for reason in REASONS for permanent in (True, False)}
    assert set(BOUNCE_CLASSES_BY_REASON) == sides
    assert set(ERROR_CODES_BY_REASON) == sides
    assert set(BOUNCE_CLASSES_BY_REASON.values()) == set(BOUNCE_CLASSES)
    assert set(ERROR_CODES_BY_REASON.values()) <= set(ERROR_CODES)
    assert set(REASONS) >= QUARANTINE_REASONS
    for pattern in PATTERNS:
        assert pattern.reason in REASONS
        assert pattern.bounce_class is None or pattern.bounce_class in BOUNCE_CLASSES
        assert pattern.error_code is None or pattern.error_code in ERROR_CODES
    # Every reason a pattern can give, and every reason is given by some pattern.
    assert {pattern.reason for pattern in PATTERNS} == set(REASONS) - {"undetermined"}


def test_hard_follows_the_reason_not_the_reply_class() -> None:
    # A permanent full mailbox, block or policy refuses the message, not the address.
    for code, status, text in [
        (552, "5.2.2", "Mailbox full"),
        (554, "5.7.1", "spam"),
        (550, "5.7.1", "blocked using zen.spamhaus.org"),
        (550, "5.7.26", "DMARC"),
    ]:
        assert classify(code, status, text).hard is False, text
    # A temporary unknown user is soft and never quarantined.
    temporary = classify(450, "4.1.1", "User unknown")
    assert (temporary.hard, temporary.quarantine) == (False, False)


def test_quarantine_is_for_addresses_that_do_not_exist() -> None:
    assert classify(550, "5.1.1", "User unknown").quarantine
    assert classify(None, "5.1.2", "Host unknown").quarantine  # the domain does not exist
    assert classify(550, "5.2.1", "This mailbox is disabled").quarantine  # recycled
    assert not classify(552, "5.2.2", "Mailbox full").quarantine
    assert not classify(554, "5.0.0", "Service unavailable").quarantine
    assert not classify(450, "4.2.1", "account temporarily disabled").quarantine


def test_a_status_without_a_code_decides_permanence() -> None:
    """DSNs give a status and often no reply code: code None (or 0) is 'unknown'."""
    assert classify(None, "5.1.1", "") == classify(0, "5.1.1", "") == verdict("user_unknown", True)
    assert classify(None, "4.2.2", "over quota") == verdict("mailbox_full", False)
    # No code, no status: the reason says whether it is final.
    assert classify(None, None, "User unknown").hard is True
    assert classify(None, None, "Mailbox full").hard is False
    # The caller may know better (a DSN's Action: delayed).
    assert classify(None, "5.1.1", "", permanent=False).hard is False


def test_the_status_wins_over_the_text_and_the_text_over_a_generic_status() -> None:
    assert classify(552, "5.2.2", "user jane: quota").reason == "mailbox_full"
    assert classify(550, "5.1.1", "blocked").reason == "user_unknown"
    # 5.7.1 says only "refused": the text says why.
    assert classify(550, "5.7.1", "No such user!").reason == "user_unknown"
    assert classify(550, "5.7.1", "Relay access denied").reason == "relaying_denied"
    assert classify(550, "5.7.1", "denied").reason == "policy"
    # A status in the text is read when none was given.
    assert classify(550, None, "5.2.2 mailbox over the limit").reason == "mailbox_full"


def test_the_text_is_read_whatever_its_case_spacing_and_accents() -> None:
    plain = classify(421, None, "Service refuse. Veuillez essayer plus tard.")
    accented = classify(421, None, "SERVICE   REFUSÉ.\n Veuillez essayer plus tard.")
    assert plain == accented
    assert plain.reason == "reputation"


def test_no_answer_at_all_is_a_temporary_network_error() -> None:
    assert no_answer("envoi: connection timed out after 30s") == Verdict(
        "network_error", "block_timeout", 44, hard=False, quarantine=False
    )
    assert no_answer("cannot connect to mx:25: Connection refused").error_code == 45
    assert no_answer("connection lost before DATA (mx:25)").error_code == 9
    assert no_answer("mx:25: TLS failed: certificate verify failed").error_code == 7
    assert no_answer("no MX host of example.com answered") == verdict("network_error", False)
    # Even a text that reads like a permanent failure stays temporary without a code.
    assert no_answer("RCPT refused by mx:25: 550 5.1.1 User unknown").hard is False


def test_an_unreadable_reply_is_undetermined() -> None:
    assert classify(550, None, "") == verdict("undetermined", True)
    assert classify(451, None, "???") == verdict("undetermined", False)
    assert classify(None, None, "") == verdict("undetermined", False)


def test_the_documented_mapping_table_is_the_data() -> None:
    """docs/bounces.md's reason table says what `verdict` does, row by row."""
    doc = (Path(__file__).parent.parent / "docs" / "bounces.md").read_text(encoding="utf-8")
    rows = {}
    for line in doc.splitlines():
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        if len(cells) == 8 and cells[0] in REASONS:
            rows[cells[0]] = cells[2:]
    assert set(rows) == set(REASONS)
    yes_no = {True: "yes", False: "no"}
    for reason, documented in rows.items():
        final, temporary = verdict(reason, True), verdict(reason, False)
        assert documented == [
            final.bounce_class,
            temporary.bounce_class,
            str(final.error_code),
            str(temporary.error_code),
            yes_no[final.hard],
            yes_no[final.quarantine],
        ], reason
