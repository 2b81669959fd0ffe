"""Per-recipient rendering speed on one core: a ~4 KB HTML email with 10 tracked links.

    .venv/bin/python bench/render.py [--recipients 10000] [--rounds 5]
        [--email sample|delivery] [--dkim none|rsa|ed25519]

Compiles the email once (CSS inlining, link marking, text part, MIME skeleton), then
renders it for N recipients with two personal variables each, ROUNDS times: the whole message
bytes (headers, text/plain and text/html parts in quoted-printable, signed click,
open, web-view and unsubscribe URLs). No database, no DKIM, no SMTP. Figures are
printed last, one `name: value` per line. Times are this process's CPU time (one
core), so that other work on the machine counts less; `renders_per_s` is the best
round's rate (the least disturbed), `renders_per_s_median` the median round's.
`written_renders_per_s` is the same email with its 10 links written by the template
(`href="{{ shop }}/spring/1?..."`): each is numbered and signed with its target per
recipient, in the HTML and again in the text part. `token_sign_us` is the cost of one
signed URL (`core.tokens`; a message needs 14), `token_sign_target_us` that of a
written link's click URL (MAC over the target, target percent-encoded).

`--email delivery` renders bench/delivery.py's email instead, the one the worker
sends in the delivery benchmark: HTML and text of its own, 10 links whose href holds
a variable (`https://shop.example.com/item/{i}?c={{ city }}`, written links signed
with their target per recipient) and the text's 10 literal links; each recipient has
a first name and a city as CSV parameters and a profile. It prints `render_us`,
`renders_per_s` and `renders_per_s_median` for that email. `--dkim` also signs each
message (rsa-sha256 or ed25519-sha256), as `MessageFactory.build` does when the From
domain has a key: the figures are then per rendered and signed message.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import statistics
import time

# bench/delivery.py, beside this file (a script's folder is first on sys.path): its email.
from delivery import HTML, TEXT

import envoi.db.models  # noqa: F401 - every table mapped, so Email rows can be built
from envoi.core.tokens import MessageLinks, Signer
from envoi.delivery.dkim import DkimSigner, generate_key
from envoi.delivery.render import CompiledMessage, MessageContext, Recipient, compile_message
from envoi.emails.models import Email, EmailContent

LINK_COUNT = 10
STYLE = """<style>
  body { font-family: Arial, sans-serif }
  .card { padding: 16px }
  a.button { color: #0066cc }
  @media (max-width: 600px) { .card { padding: 8px } }
</style>"""
CARD = """<div class="card"><h2>Offer {i}</h2>
<p>New colours and light fabrics, picked for {{{{ city }}}}. Free delivery from 50 euros,
returns within 30 days.</p>
<p><a class="button"
 href="{shop}/spring/{i}?utm_source=envoi&amp;utm_medium=email">Offer {i}</a>
</p></div>
"""
SHOP = "https://shop.example.com"


def sample_email(*, written: bool = False) -> Email:
    """The sample email; `written`: its links' URLs come from the `shop` variable."""
    shop = "{{ shop }}" if written else SHOP
    cards = "".join(CARD.format(i=i, shop=shop) for i in range(LINK_COUNT))
    html = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'>{STYLE}</head><body>"
        f"<h1>Hello {{{{ first_name }}}}!</h1>{cards}<p>See you soon, {{{{ first_name }}}}.</p>"
        "</body></html>"
    )
    content = EmailContent(language="", subject="Spring news for {{ first_name }}", text_html=html)
    return Email(
        id=1,
        project_id=1,
        from_address="Example Shop <news@example.com>",
        not_add_unsubscr_link=False,
        not_add_web_view_link=False,
        contents=[content],
    )


def html_size(message: bytes) -> int:
    """Octets of the decoded text/html part of `message`."""
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    for part in parsed.walk():
        if part.get_content_type() == "text/html":
            return len(part.get_payload(decode=True) or b"")
    return 0


def click_urls_with_target(message: bytes) -> int:
    """Click URLs that carry their target (`?u=`) in the decoded parts of `message`."""
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    found = 0
    for part in parsed.walk():
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            found += payload.count(b"?u=")
    return found


def delivery_email() -> Email:
    """bench/delivery.py's email, as its API call creates it."""
    content = EmailContent(
        language="",
        subject="{{ first_name }}, this week in {{ city }}",
        text_html=HTML,
        text_plain=TEXT,
    )
    return Email(
        id=1,
        project_id=1,
        from_address="Bench News <news@bench.example.com>",
        not_add_unsubscr_link=False,
        not_add_web_view_link=False,
        contents=[content],
    )


def sample_people(recipients: int) -> list[Recipient]:
    return [
        Recipient(
            i, f"user{i}@example.org", {"first_name": f"Name{i}", "city": "Lyon"}, {"shop": SHOP}
        )
        for i in range(recipients)
    ]


def delivery_people(recipients: int) -> list[Recipient]:
    """As the worker gets them: CSV columns as parameters, the profile's own fields."""
    cities = ("Paris", "Berlin", "Rome", "Madrid", "Lisbon", "Vienna", "Prague", "Oslo")
    people = []
    for i in range(recipients):
        address = f"user{i}@d{i % 997}.example.com"
        profile = {"uid": f"u{i}", "email": address, "phone": None, "language": None}
        params = {"first_name": f"Name{i}", "city": cities[i % len(cities)]}
        people.append(Recipient(i, address, profile, params))
    return people


def run(
    compiled: CompiledMessage, people: list[Recipient], signer: DkimSigner | None = None
) -> float:
    started = time.process_time()
    if signer is None:
        for person in people:
            compiled.render(person)
    else:
        for person in people:
            signer.sign(compiled.render(person))
    return time.process_time() - started


def dkim_signer(algorithm: str, domain: str) -> DkimSigner | None:
    if algorithm == "none":
        return None
    pem, _ = generate_key(algorithm)
    return DkimSigner(domain, "bench", pem)


def main_delivery(args: argparse.Namespace, links: MessageLinks) -> None:
    sample = delivery_email()
    context = MessageContext(1, 1, "S_1", "L", (), "bounces.example.com")
    compiled = compile_message(sample, sample.contents[0], context, links)
    people = delivery_people(args.recipients)
    message = compiled.render(people[0])
    if len(compiled.link_urls) != LINK_COUNT or click_urls_with_target(message) != LINK_COUNT:
        raise SystemExit("expected 10 literal links (text) and 10 written links (HTML)")
    signer = dkim_signer(args.dkim, compiled.from_domain)
    run(compiled, people[:2000], signer)  # warm-up
    rounds = sorted(run(compiled, people, signer) for _ in range(args.rounds))
    print(f"message_bytes: {len(message)}")
    print(f"recipients: {args.recipients}")
    print(f"dkim: {args.dkim}")
    print(f"render_us: {rounds[0] / args.recipients * 1e6:.0f}")
    print(f"renders_per_s_median: {args.recipients / statistics.median(rounds):.0f}")
    print(f"renders_per_s: {args.recipients / rounds[0]:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--email", choices=("sample", "delivery"), default="sample")
    parser.add_argument("--dkim", choices=("none", "rsa", "ed25519"), default="none")
    args = parser.parse_args()
    links = MessageLinks("https://track.example.com", Signer("bench-secret-key-" * 3))
    if args.email == "delivery":
        main_delivery(args, links)
        return
    sample = sample_email()
    context = MessageContext(1, 1, "S_1", "L", ("spring",), "bounces.example.com")
    started = time.process_time()
    compiled = compile_message(sample, sample.contents[0], context, links)
    compile_ms = (time.process_time() - started) * 1000
    if len(compiled.link_urls) != LINK_COUNT:
        raise SystemExit(f"expected {LINK_COUNT} tracked links, found {compiled.link_urls}")
    message = compiled.render(Recipient(0, "a@example.org", {"first_name": "A"}, {}))
    people = sample_people(args.recipients)
    signer = dkim_signer(args.dkim, compiled.from_domain)
    run(compiled, people[:2000], signer)  # warm-up
    rounds = sorted(run(compiled, people, signer) for _ in range(args.rounds))
    written_sample = sample_email(written=True)
    written = compile_message(written_sample, written_sample.contents[0], context, links)
    sent = written.render(Recipient(0, "a@example.org", {}, {"shop": SHOP}))
    if written.link_urls or click_urls_with_target(sent) != 2 * LINK_COUNT:
        raise SystemExit("expected 10 written links in the HTML and the text part")
    written_rounds = sorted(run(written, people, signer) for _ in range(args.rounds))
    signs = 20_000
    started = time.process_time()
    for i in range(signs):
        links.click(i, 3)
    sign_us = (time.process_time() - started) / signs * 1e6
    target = f"{SHOP}/spring/3?utm_source=envoi&utm_medium=email"
    started = time.process_time()
    for i in range(signs):
        links.click(i, 13, target)
    sign_target_us = (time.process_time() - started) / signs * 1e6
    print(f"template_html_bytes: {len(sample.contents[0].text_html or '')}")
    print(f"rendered_html_bytes: {html_size(message)}")
    print(f"message_bytes: {len(message)}")
    print(f"compile_ms: {compile_ms:.1f}")
    print(f"recipients: {args.recipients}")
    print(f"dkim: {args.dkim}")
    print(f"token_sign_us: {sign_us:.1f}")
    print(f"token_sign_target_us: {sign_target_us:.1f}")
    print(f"written_renders_per_s: {args.recipients / written_rounds[0]:.0f}")
    print(f"render_us: {rounds[0] / args.recipients * 1e6:.0f}")
    print(f"renders_per_s_median: {args.recipients / statistics.median(rounds):.0f}")
    print(f"renders_per_s: {args.recipients / rounds[0]:.0f}")


if __name__ == "__main__":
    main()
