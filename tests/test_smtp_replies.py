"""Bounce classification of real SMTP replies (Gmail, Outlook, Yahoo, Postfix, Exim ...)."""

from __future__ import annotations

import pytest

from envoi.core.bounces import REASONS
from envoi.core.smtp_replies import (
    BOUNCE_CLASSES,
    RULES,
    Classification,
    classify,
    classify_reply,
    status_from_text,
)
from envoi.delivery.interfaces import SmtpReply

# (code, enhanced status as the client parsed it or None, text, expected class)
REPLIES: list[tuple[int, str | None, str, str]] = [
    # --- Gmail
    (
        550,
        "5.1.1",
        "The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address for typos or unnecessary spaces. "
        "https://support.google.com/mail/?p=NoSuchUser",
        "user_unknown",
    ),
    (
        552,
        "5.2.2",
        "The email account that you tried to reach is over quota. Please direct the "
        "recipient to https://support.google.com/mail/?p=OverQuotaPerm",
        "mailbox_full",
    ),
    (
        452,
        "4.2.2",
        "The email account that you tried to reach is over quota. Please direct the "
        "recipient to https://support.google.com/mail/?p=OverQuotaTemp",
        "mailbox_full",
    ),
    (550, "5.2.1", "The email account that you tried to reach is disabled.", "user_recycled"),
    (
        550,
        "5.7.1",
        "[203.0.113.7 12] Our system has detected that this message is likely unsolicited "
        "mail. To reduce the amount of spam sent to Gmail, this message has been blocked.",
        "block_content",
    ),
    (
        550,
        "5.7.26",
        "Unauthenticated email from example.com is not accepted due to domain's DMARC "
        "policy. Please contact the administrator of example.com domain.",
        "block_other",
    ),
    (
        550,
        "5.7.26",
        "This mail is unauthenticated, which poses a security risk to the sender and "
        "Gmail users, and has been blocked. The sender must authenticate with at least "
        "one of SPF or DKIM.",
        "block_other",
    ),
    (
        421,
        "4.7.0",
        "[203.0.113.7 15] Our system has detected an unusual rate of unsolicited mail "
        "originating from your IP address. To protect our users from spam, mail sent from "
        "your IP address has been temporarily rate limited.",
        "block_other",
    ),
    (
        552,
        "5.7.0",
        "This message was blocked because its content presents a potential security "
        "issue. Please visit https://support.google.com/mail/?p=BlockedMessage",
        "block_content",
    ),
    (
        450,
        "4.2.1",
        "The user you are trying to contact is receiving mail too quickly. Please resend "
        "your message at a later time.",
        "other_soft",
    ),
    (451, "4.3.0", "Mail server temporarily rejected message.", "other_soft"),
    # --- Outlook.com / Microsoft 365
    (
        550,
        "5.5.0",
        "Requested action not taken: mailbox unavailable (S2017062302). "
        "[AM4PEPF00025F97.EURPRD83.prod.outlook.com]",
        "user_unknown",
    ),
    (
        550,
        "5.1.10",
        "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        "user_unknown",
    ),
    (
        550,
        "5.4.1",
        "Recipient address rejected: Access denied. AS(201806281) "
        "[DB5EUR03FT012.eop-EUR03.prod.protection.outlook.com]",
        "user_unknown",
    ),
    (
        550,
        "5.7.1",
        "Unfortunately, messages from [203.0.113.7] weren't sent. Please contact your "
        "Internet service provider since part of their network is on our block list "
        "(S3150).",
        "block_other",
    ),
    (550, "5.7.606", "Access denied, banned sending IP [203.0.113.7].", "block_other"),
    (
        451,
        "4.7.500",
        "Server busy. Please try again later from [203.0.113.7]. (S77714)",
        "other_soft",
    ),
    (452, "4.3.1", "Insufficient system resources (UsedDiskSpace[C:\\Queue])", "other_soft"),
    # --- Yahoo / AOL
    (554, None, "delivery error: dd This user doesn't have a yahoo.com account", "user_unknown"),
    (
        554,
        None,
        "30 Sorry, your message to x@yahoo.com cannot be delivered. This mailbox is "
        "disabled (554.30).",
        "user_recycled",
    ),
    (
        553,
        "5.7.1",
        "[BL21] Connections will not be accepted from 203.0.113.7, because the ip is in "
        "Spamhaus's list; see http://postmaster.yahoo.com/550-bl23.html",
        "block_other",
    ),
    (
        554,
        "5.7.9",
        "Message not accepted for policy reasons. See "
        "https://help.yahoo.com/kb/postmaster/SLN7253.html",
        "block_other",
    ),
    (
        421,
        "4.7.0",
        "[TSS04] Messages from 203.0.113.7 temporarily deferred due to unexpected volume "
        "or user complaints - 4.16.55.1",
        "block_other",
    ),
    (552, None, "1 Requested mail action aborted, mailbox not found", "user_unknown"),
    (451, None, "Message temporarily deferred - [160]", "other_soft"),
    # --- Postfix
    (
        550,
        "5.1.1",
        "<nobody@example.com>: Recipient address rejected: User unknown in virtual mailbox table",
        "user_unknown",
    ),
    (552, "5.2.2", "<full@example.com>: Recipient address rejected: Mailbox full", "mailbox_full"),
    (
        450,
        "4.2.0",
        "<grey@example.com>: Recipient address rejected: Greylisted, see "
        "http://postgrey.schweikert.ch/help/example.com.html",
        "other_soft",
    ),
    (554, "5.7.1", "<x@example.org>: Relay access denied", "block_other"),
    (
        554,
        "5.7.1",
        "Service unavailable; Client host [203.0.113.7] blocked using zen.spamhaus.org",
        "block_other",
    ),
    (421, "4.4.2", "mx.example.com Error: timeout exceeded", "block_timeout"),
    (
        553,
        "5.1.8",
        "<bounces@example.com>: Sender address rejected: Domain not found",
        "block_other",
    ),
    (451, "4.3.0", "<x@example.com>: Temporary lookup failure", "other_soft"),
    (552, "5.3.4", "Message size exceeds fixed limit", "other_hard"),
    # --- Exim
    (550, None, "Unrouteable address", "user_unknown"),
    (550, None, "No Such User Here", "user_unknown"),
    (550, None, "Administrative prohibition", "block_other"),
    (
        550,
        None,
        "rejected because 203.0.113.7 is in a black list at zen.spamhaus.org",
        "block_other",
    ),
    (552, None, "Mailbox quota exceeded", "mailbox_full"),
    (451, None, "Temporary local problem - please try later", "other_soft"),
    (
        550,
        None,
        "Verification failed for <bounces@example.com> Unrouteable address Sender verify failed",
        "block_other",
    ),
    # --- a relay's DSN-like answers and no answer at all
    (421, "4.4.7", "Delivery time expired", "block_timeout"),
    (0, None, "envoi: connection timed out after 30s", "block_timeout"),
    (0, None, "envoi: connection refused by 198.51.100.1:25", "other_soft"),
    (550, "5.1.6", "Recipient addresses moved; no forwarding address", "user_recycled"),
    (554, "5.6.0", "Message content rejected", "block_content"),
    (550, None, "Message rejected as spam by Content Filtering.", "block_content"),
    (554, "5.0.0", "Service unavailable", "other_hard"),
    (421, None, "Service not available, closing transmission channel", "other_soft"),
]


@pytest.mark.parametrize(("code", "status", "text", "expected"), REPLIES)
def test_real_replies(code: int, status: str | None, text: str, expected: str) -> None:
    assert classify(code, status, text).bounce_class == expected


def test_the_table_is_big_and_uses_only_seed_classes() -> None:
    assert len(REPLIES) >= 30
    assert {expected for *_, expected in REPLIES} == set(BOUNCE_CLASSES)
    # The table names reasons now (`core.bounces`); the classes derive from them.
    assert {rule.reason for rule in RULES} <= set(REASONS)
    assert {rule.bounce_class for rule in RULES if rule.bounce_class} <= set(BOUNCE_CLASSES)


def test_hard_and_quarantine() -> None:
    unknown = classify(550, "5.1.1", "User unknown")
    assert unknown == Classification("user_unknown", hard=True, quarantine=True)
    recycled = classify(550, "5.2.1", "The email account that you tried to reach is disabled.")
    assert recycled == Classification("user_recycled", hard=True, quarantine=True)
    # A full mailbox or a block refuses the message, not the address: never hard.
    assert classify(552, "5.2.2", "Mailbox full") == Classification("mailbox_full", False, False)
    assert classify(554, "5.7.1", "spam") == Classification("block_content", False, False)
    assert classify(554, "5.0.0", "no") == Classification("other_hard", True, False)
    # A temporary "user unknown" (lazy recipient verification) never quarantines.
    assert classify(450, "4.1.1", "Recipient address rejected: unverified address") == (
        Classification("user_unknown", hard=False, quarantine=False)
    )


def test_status_read_from_the_text_when_the_client_did_not_split_it() -> None:
    assert status_from_text("550-5.1.1 The email account that you tried") == "5.1.1"
    assert status_from_text("5.7.1 Service unavailable") == "5.7.1"
    assert status_from_text("Mailbox unavailable") is None
    assert classify(550, None, "5.2.2 mailbox over the limit").bounce_class == "mailbox_full"


def test_the_status_wins_over_the_text() -> None:
    # The text names a user, the status a full mailbox: the standard code decides.
    assert classify(552, "5.2.2", "user jane: quota").bounce_class == "mailbox_full"
    assert classify(550, "5.1.1", "blocked").bounce_class == "user_unknown"


def test_classify_reply_reads_an_smtp_reply() -> None:
    reply = SmtpReply(550, "5.1.1", "no such user")
    assert classify_reply(reply) == classify(550, "5.1.1", "no such user")


def test_a_classification_carries_the_reason_and_seed_003_error_code() -> None:
    full = classify(552, "5.2.2", "Mailbox full")
    assert (full.reason, full.error_code) == ("mailbox_full", 15)
    greylisted = classify(450, "4.2.0", "Greylisted, see http://postgrey.schweikert.ch/")
    assert (greylisted.bounce_class, greylisted.reason, greylisted.error_code) == (
        "other_soft",
        "rate_limited",
        53,
    )


def test_no_answer_is_temporary_whatever_its_text() -> None:
    """Code 0: delivery got no SMTP answer; the row is retried, never quarantined."""
    refused = classify(0, None, "RCPT refused by mx:25: 550 5.1.1 User unknown")
    assert (refused.hard, refused.quarantine) == (False, False)
    silent = classify(0, None, "no MX host of example.com answered")
    assert (silent.bounce_class, silent.reason) == ("other_soft", "network_error")
