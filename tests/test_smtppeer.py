"""The test SMTP peer answers as documented, seen through Python's own smtplib."""

from __future__ import annotations

import smtplib
import threading

import pytest

from envoi.testing.smtppeer import SmtpPeer

BODY = b"Subject: hi\r\n\r\nbody\r\n"


def test_answers_by_local_part_and_counts_attempts() -> None:
    with SmtpPeer(slow_seconds=0.1) as peer, smtplib.SMTP(peer.host, peer.port) as client:
        assert client.ehlo()[0] == 250
        assert client.has_extn("pipelining")
        client.sendmail("from@envoi.test", ["ok@x.test"], BODY)
        for address, code in [
            ("unknown@x.test", 550),
            ("full@x.test", 552),
            ("grey@x.test", 451),
        ]:
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                client.sendmail("from@envoi.test", [address], BODY)
            assert refused.value.recipients[address][0] == code
            client.rset()
        client.sendmail("from@envoi.test", ["grey@x.test", "slow@x.test"], BODY)
        with pytest.raises(smtplib.SMTPDataError) as spam:
            client.sendmail("from@envoi.test", ["spam@x.test"], BODY)
        assert spam.value.smtp_code == 554
        [first, second] = peer.messages
        assert (first.mail_from, first.recipients, first.data) == (
            "from@envoi.test",
            ("ok@x.test",),
            BODY,
        )
        assert second.recipients == ("grey@x.test", "slow@x.test")
        assert peer.attempts["grey@x.test"] == 2
        assert peer.attempts["nobody@x.test"] == 0
        assert peer.connections == 1
        assert peer.wait_for(2, timeout=1) == peer.messages
        with pytest.raises(TimeoutError):
            peer.wait_for(3, timeout=0.05)
        peer.clear()
        assert (peer.messages, peer.connections) == ([], 0)


def test_busy_and_drop_end_the_session_once() -> None:
    with SmtpPeer(pipelining=False) as peer:
        with smtplib.SMTP(peer.host, peer.port) as client:
            client.ehlo()
            assert not client.has_extn("pipelining")
            with pytest.raises(smtplib.SMTPRecipientsRefused) as busy:
                client.sendmail("from@envoi.test", ["busy@x.test"], BODY)
            assert busy.value.recipients["busy@x.test"][0] == 421
        client = smtplib.SMTP(peer.host, peer.port)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.sendmail("from@envoi.test", ["drop@x.test"], BODY)
        client.close()
        with smtplib.SMTP(peer.host, peer.port) as again:
            again.sendmail("from@envoi.test", ["busy@x.test"], BODY)
            again.sendmail("from@envoi.test", ["drop@x.test"], BODY)
        assert peer.recipients() == ["busy@x.test", "drop@x.test"]
        assert peer.connections == 3


def test_auth_is_required_when_users_are_given() -> None:
    with SmtpPeer(auth_users={"shop": "pw"}) as peer:
        with smtplib.SMTP(peer.host, peer.port) as anonymous:
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                anonymous.sendmail("from@envoi.test", ["ok@x.test"], BODY)
            assert refused.value.smtp_code == 530
        with smtplib.SMTP(peer.host, peer.port) as client:
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login("shop", "wrong")
            client.login("shop", "pw")
            client.sendmail("from@envoi.test", ["ok@x.test"], BODY)
        assert [m.login for m in peer.messages] == ["shop"]


def test_lists_are_safe_to_read_while_the_server_appends() -> None:
    with SmtpPeer() as peer:

        def send(n: int) -> None:
            with smtplib.SMTP(peer.host, peer.port) as client:
                for i in range(20):
                    client.sendmail("from@envoi.test", [f"ok{n}-{i}@x.test"], BODY)

        threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            assert len(peer.messages) <= 80
        for thread in threads:
            thread.join()
        assert len(peer.wait_for(80)) == 80
        assert peer.connections == 4
