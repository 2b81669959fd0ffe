"""What the inbound parser reads in real feedback: DSNs, ARF complaints, the plain-text
bounces of real MTAs, auto-replies, and anything else (tests/samples/feedback/)."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from envoi.inbound.parsing import find_send_tokens, parse
from envoi.inbound.reports import Report

SAMPLES = Path(__file__).resolve().parent / "samples" / "feedback"


def reports(name: str) -> list[Report]:
    return parse((SAMPLES / name).read_bytes())


@dataclass(frozen=True)
class Expected:
    kind: str
    recipient: str | None
    reason: str | None = None  # None: not checked (or none given, for non-bounces)
    bounce_class: str | None = None
    status: str | None = None
    smtp_code: int | None = None
    token: str | None = None  # the send token found in the returned message
    reporting_mta: str | None = None


BOUNCE = "bounce"
UNKNOWN = ("user_unknown", "user_unknown")
# fmt: off
EXPECTED: dict[str, Expected] = {
    # RFC 3464 and RFC 6533 DSNs
    "dsn-rfc3464-simple.eml": Expected(
        BOUNCE, "louisl@larry.slip.umd.edu", "network_error", "block_timeout", "4.0.0", 426,
        "1001.0123456789abcdef0123", "cs.utk.edu",
    ),
    "dsn-rfc3464-gateway.eml": Expected(BOUNCE, None, None, None, "5.0.0", None, None, "sys30"),
    "dsn-postfix-user-unknown.eml": Expected(
        BOUNCE, "nobody@example.org", *UNKNOWN, "5.1.1", 550, "2001.5f1e0c9a7b3d2e8f6a41",
        "mx.example.org",
    ),
    "dsn-gmail-no-such-user.eml": Expected(
        BOUNCE, "no.such.user.4711@gmail.com", *UNKNOWN, "5.1.1", 550, "2002.c0ffee00c0ffee00c0ff",
        "googlemail.com",
    ),
    "dsn-outlook-recipient-not-found.eml": Expected(
        BOUNCE, "nobody@contoso.example", *UNKNOWN, "5.1.10", 550, "2003.0a1b2c3d4e5f60718293",
        "am7eur03.prod.outlook.com",
    ),
    "dsn-exim-mailbox-full.eml": Expected(
        BOUNCE, "full.mailbox@example.net", "mailbox_full", "mailbox_full", "5.2.2", 552,
        "2004.deadbeefdeadbeefdead", "mx.example.net",
    ),
    "dsn-global-utf8-user-unknown.eml": Expected(
        BOUNCE, "jörg@bücher.example", *UNKNOWN, "5.1.1", 550, "2005.00112233445566778899",
    ),
    "dsn-delivered-success.eml": Expected(
        "not-bounce", "happy@example.com", None, None, "2.0.0", None, "2006.abcdefabcdefabcdefab",
    ),
    "delayed-dsn-postfix.eml": Expected(
        "delayed", "slow@example.net", "network_error", "block_timeout", "4.4.1", None,
        "2007.1234567890abcdef1234", "relay.example.com",
    ),
    "delayed-dsn-rfc3464.eml": Expected(
        "delayed", "thomas@de-montfort.ac.uk", None, None, "4.0.0", None, None,
        "sun2.nsfnet-relay.ac.uk",
    ),
    # RFC 5965 ARF, Yahoo CFL, Microsoft JMRP, a redacted recipient
    "arf-rfc5965.eml": Expected(
        "complaint", "user@example.com", None, None, None, None, None, "mail.example.com",
    ),
    "arf-yahoo-cfl.eml": Expected(
        "complaint", "complainer.jane@yahoo.com", None, None, None, None,
        "3001.feedfacefeedfacefeed", "Yahoo!-Mail-Feedback/2.0",
    ),
    "arf-microsoft-jmrp.eml": Expected(
        "complaint", "reporter@hotmail.com", None, None, None, None, "3002.0badc0de0badc0de0bad",
        "hotmail.com",
    ),
    "arf-redacted-recipient.eml": Expected(
        "complaint", None, None, None, None, None, "3003.aaaabbbbccccddddeeee",
    ),
    # plain-text bounces of real MTAs
    "text-postfix-user-unknown.eml": Expected(
        BOUNCE, "gone@example.org", *UNKNOWN, "5.1.1", 550, "4001.0f0e0d0c0b0a09080706",
        "mail.example.org",
    ),
    "text-exim-user-unknown.eml": Expected(
        BOUNCE, "unknown.user@example.com", *UNKNOWN, "5.1.1", 550, "4002.1111222233334444aaaa",
        "mx.example.com",
    ),
    "text-exim-delayed.eml": Expected(
        "delayed", "greylisted@example.net", "rate_limited", "other_soft", "4.7.1", 451,
    ),
    "text-sendmail-user-unknown.eml": Expected(
        BOUNCE, "student42@example.edu", *UNKNOWN, "5.1.1", 550, "4004.3333444455556666cccc",
        "mail.example.edu",
    ),
    "text-qmail-no-mailbox.eml": Expected(
        BOUNCE, "nomailbox@example.net", *UNKNOWN, "5.1.1", None, "4005.4444555566667777dddd",
        "mail.example.net",
    ),
    "text-qmail-remote-refused.eml": Expected(
        BOUNCE, "refused@example.org", *UNKNOWN, "5.1.1", 550, "4006.5555666677778888eeee",
        "relay.example.org",
    ),
    "text-exchange-recipient-not-found.eml": Expected(
        BOUNCE, "left.company@corp.example.com", *UNKNOWN, "5.1.1", 550,
        "4007.6666777788889999ffff", "exch01.corp.example.com",
    ),
    "text-outlook-com-mailbox-unavailable.eml": Expected(
        BOUNCE, "closed.account@outlook.com", *UNKNOWN, "5.5.0", 550, "4008.777788889999aaaa0000",
        "db5pr03mb1234.eurprd03.prod.outlook.com",
    ),
    "text-gmail-address-not-found.eml": Expected(
        BOUNCE, "ex.employee@googleworkspace-customer.example", *UNKNOWN, "5.1.1", 550,
        "4009.8888999900001111aaaa", "googlemail.com",
    ),
    "text-gmail-failed-permanently.eml": Expected(
        BOUNCE, "full.box@example.jp", "mailbox_full", "mailbox_full", "5.2.2", 552,
        "4010.9999000011112222bbbb",
    ),
    "text-yahoo-no-account.eml": Expected(
        BOUNCE, "nobody.here@yahoo.com", *UNKNOWN, None, 554, "4011.aaaa0000bbbb1111cccc",
        "yahoo.com",
    ),
    # a format only flufl.bounce's detectors know (MDaemon)
    "text-mdaemon-no-such-user.eml": Expected(
        BOUNCE, "nosuchuser@smallbiz.example", *UNKNOWN, "5.1.1", 550, "4012.bbbb1111cccc2222dddd",
        "smallbiz.example",
    ),
    # auto-replies, and a human's reply
    "autoreply-vacation.eml": Expected(
        "autoreply", "paul.martin@example.com", None, None, None, None, "5001.cccc2222dddd3333eeee",
    ),
    "autoreply-exchange-automatic-reply.eml": Expected(
        "autoreply", "anna.schmidt@corp.example.com", None, None, None, None,
        "5002.dddd3333eeee4444ffff",
    ),
    "autoreply-abwesenheitsnotiz.eml": Expected(
        "autoreply", "juergen.mueller@beispiel.example", None, None, None, None,
        "5003.eeee4444ffff55550000",
    ),
    "autoreply-reponse-automatique.eml": Expected(
        "autoreply", "claire.dubois@exemple.example", None, None, None, None,
        "5004.ffff55550000666611aa",
    ),
    "human-reply.eml": Expected(
        "not-bounce", None, None, None, None, None, "5005.0000666611112222abcd",
    ),
}
# fmt: on


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_sample_reads_as_expected(name: str) -> None:
    expected = EXPECTED[name]
    (report,) = reports(name)
    assert report.kind == expected.kind
    assert report.recipient == expected.recipient
    if expected.reason:
        assert (report.reason, report.bounce_class) == (expected.reason, expected.bounce_class)
    assert report.status == expected.status
    assert report.smtp_code == expected.smtp_code
    assert report.send_tokens[:1] == ((expected.token,) if expected.token else ())
    if expected.reporting_mta:
        assert report.reporting_mta == expected.reporting_mta
    if report.kind in ("bounce", "delayed"):
        assert report.error_code is not None
        assert report.hard is (
            report.bounce_class in ("user_unknown", "user_recycled", "other_hard")
        )
    else:
        assert (report.reason, report.bounce_class, report.error_code, report.hard) == (None,) * 4


def test_every_sample_has_expectations() -> None:
    names = {p.name for p in SAMPLES.glob("*.eml")}
    assert names - {"dsn-rfc3464-multi-recipient.eml"} == set(EXPECTED)


def test_a_dsn_with_two_failed_recipients_gives_two_bounces() -> None:
    found = reports("dsn-rfc3464-multi-recipient.eml")
    assert [(r.kind, r.recipient) for r in found] == [
        ("bounce", "arathib@vnet.ibm.com"),
        ("delayed", "johnh@hpnjld.njd.hp.com"),
        ("bounce", "wsnell@sdcc13.ucsd.edu"),
    ]
    first, delayed, last = found
    assert first.diagnostic == "'arathib@vnet.IBM.COM' is not a registered gateway user"
    assert first.smtp_code == 550
    assert first.status == "5.0.0"  # "5.0.0 (permanent failure)": the comment is not kept
    assert first.reporting_mta == last.reporting_mta == "cs.utk.edu"
    assert (last.reason, last.hard) == ("user_unknown", True)
    # No Diagnostic-Code: the Status comment is what the relay said.
    assert delayed.diagnostic == "hpnjld.njd.jp.com: host name lookup failure"
    assert delayed.hard is False


def test_a_delayed_dsn_is_a_tempfail_never_a_bounce() -> None:
    (report,) = reports("delayed-dsn-postfix.eml")
    assert report.kind == "delayed"
    assert report.hard is False
    assert report.diagnostic == "connect to mx.example.net[192.0.2.7]:25: Connection timed out"


def test_a_dsn_is_read_before_its_auto_submitted_header() -> None:
    raw = (SAMPLES / "dsn-postfix-user-unknown.eml").read_bytes()
    assert b"Auto-Submitted: auto-replied" in raw
    assert [r.kind for r in parse(raw)] == ["bounce"]


@pytest.mark.parametrize(
    ("name", "diagnostic"),
    [
        # Gmail's multi-line reply: "550-5.1.1" repeated on every line is dropped.
        (
            "dsn-gmail-no-such-user.eml",
            "The email account that you tried to reach does not exist. Please try "
            "double-checking the recipient's email address for typos or unnecessary spaces. "
            "For more information, go to https://support.google.com/mail/?p=NoSuchUser "
            "a1si1234567qkb.12 - gsmtp",
        ),
        # Postfix's "(in reply to RCPT TO command)" is Postfix's, not the server's.
        (
            "text-postfix-user-unknown.eml",
            "<gone@example.org>: Recipient address rejected: User unknown in local recipient table",
        ),
        # Exchange quotes the reply: "Remote Server returned '550 5.1.10 ...'".
        (
            "dsn-outlook-recipient-not-found.eml",
            "RESOLVER.ADR.RecipientNotFound; Recipient nobody@contoso.example not found by SMTP "
            "address lookup",
        ),
        ("text-exchange-recipient-not-found.eml", "RESOLVER.ADR.RecipNotFound; not found"),
        ("text-sendmail-user-unknown.eml", "<student42@example.edu>... User unknown"),
        ("text-qmail-no-mailbox.eml", "Sorry, no mailbox here by that name."),
        ("text-qmail-remote-refused.eml", "<refused@example.org>... User Unknown"),
        (
            "text-yahoo-no-account.eml",
            "delivery error: dd This user doesn't have a yahoo.com account "
            "(nobody.here@yahoo.com) [0] - mta1234.mail.gq1.yahoo.com",
        ),
    ],
)
def test_the_diagnostic_is_the_servers_text_on_one_line(name: str, diagnostic: str) -> None:
    (report,) = reports(name)
    assert report.diagnostic == diagnostic


def test_the_returned_message_names_the_send() -> None:
    (report,) = reports("dsn-postfix-user-unknown.eml")
    # The List-Unsubscribe and VERP tokens of the returned message are other purposes'.
    assert report.send_tokens == ("2001.5f1e0c9a7b3d2e8f6a41",)
    assert report.message_ids == ("2001.5f1e0c9a7b3d2e8f6a41@shop.example",)


def test_find_send_tokens_reads_the_send_header_then_message_ids() -> None:
    text = (
        "Return-Path: <bounces+7.00000000000000000001@bounces.shop.example>\n"
        "Message-ID: <7.0123456789abcdef0123@shop.example>\n"
        "List-Unsubscribe: <https://t.shop.example/t/u/7.aaaaaaaaaaaaaaaaaaaa>\n"
        "References: <other@example.net>\n <7.0123456789abcdef0123@shop.example>\n"
        "X-Envoi-Send:\n 7.0123456789abcdef0123\n"
        "> X-Envoi-Send: 8.fedcba9876543210fedc\n"
        "X-Envoi-Send: 9.NOT-A-TOKEN\n"
    )
    assert find_send_tokens(text) == ("7.0123456789abcdef0123", "8.fedcba9876543210fedc")
    assert find_send_tokens("") == ()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n\r\n",
        bytes(range(256)) * 4,
        b"<!doctype html><html><body>Hello</body></html>",
        b'{"not": "an email"}',
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\n",
        b'Content-Type: multipart/report; report-type=feedback-report; boundary="\r\n\r\n',
        b"From: friend@example.com\r\nSubject: hello\r\n\r\nSee you tomorrow.\r\n",
    ],
)
def test_garbage_and_ordinary_mail_are_not_bounces(raw: bytes) -> None:
    assert parse(raw) == [Report("not-bounce")]


def test_damaged_samples_never_fail(caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(20250303)  # noqa: S311 - reproducible damage, not secrets
    damaged: list[bytes] = []
    for path in sorted(SAMPLES.glob("*.eml")):
        raw = path.read_bytes()
        damaged += [raw[:cut] for cut in range(0, len(raw), 97)]
        for _ in range(30):
            copy = bytearray(raw)
            for _ in range(rng.randrange(1, 20)):
                copy[rng.randrange(len(copy))] = rng.choice(b"\x00\n\r :;<>=\"'()@\xc3\xff")
            damaged.append(bytes(copy))
    with caplog.at_level(logging.WARNING, logger="envoi.inbound"):
        for raw in damaged:
            found = parse(raw)
            assert found
            assert {r.kind for r in found} <= {
                "bounce",
                "delayed",
                "complaint",
                "autoreply",
                "not-bounce",
            }
    assert not [r for r in caplog.records if r.getMessage() == "unreadable feedback message"]


def test_a_postfix_alias_bounce_names_the_address_we_sent_to() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\n"
        b"Subject: Undelivered Mail Returned to Sender\n\n"
        b"This is the mail system at host mx.example.org.\n\n"
        b"<old.box@example.net> (expanded from <team@example.org>): host\n"
        b"    mx.example.net[192.0.2.9] said: 550 5.2.1 <old.box@example.net>: mailbox\n"
        b"    disabled (in reply to RCPT TO command)\n"
    )
    (report,) = parse(raw)
    assert (report.kind, report.recipient, report.status) == ("bounce", "team@example.org", "5.2.1")
    assert report.reporting_mta == "mx.example.org"


def test_a_failure_notice_in_an_unknown_format_is_still_a_bounce() -> None:
    raw = (
        b"From: Mail Administrator <Postmaster@mail.example.biz>\n"
        b"Subject: Undeliverable Mail\n\n"
        b"Your mail could not be passed on.\n"
        b"The remote server said: 554 5.7.1 Message rejected as spam\n"
    )
    (report,) = parse(raw)
    assert (report.kind, report.recipient) == ("bounce", None)  # the VERP token names it
    assert (report.smtp_code, report.status) == (554, "5.7.1")
    assert report.diagnostic == "Message rejected as spam"
    assert report.reporting_mta == "mail.example.biz"


def test_exim_failed_recipients_header_names_a_recipient_the_text_does_not() -> None:
    raw = (
        b"From: Mail Delivery System <Mailer-Daemon@mx.example.com>\n"
        b"Subject: Mail delivery failed: returning message to sender\n"
        b"X-Failed-Recipients: someone@example.com\n\n"
        b"An unexpected layout.\n"
    )
    assert [(r.kind, r.recipient) for r in parse(raw)] == [("bounce", "someone@example.com")]


def test_every_feedback_type_is_a_complaint_that_says_its_type() -> None:
    raw = (
        (SAMPLES / "arf-rfc5965.eml")
        .read_bytes()
        .replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam")
    )
    (report,) = parse(raw)
    assert (report.kind, report.feedback_type) == ("complaint", "not-spam")


@pytest.mark.parametrize(
    "subject",
    [
        b"Re: my order was not delivered",
        b"Re: Absence of a tracking number",
        b"Re: Vacation offers for spring",
        b"Re: Out of office chairs",
    ],
)
def test_a_humans_reply_is_neither_a_bounce_nor_an_autoreply(subject: bytes) -> None:
    raw = b"From: Jane <jane@example.com>\nSubject: " + subject + b"\n\nWhere is it?\n"
    assert [r.kind for r in parse(raw)] == ["not-bounce"]
