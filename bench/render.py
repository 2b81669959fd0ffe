"""Per-recipient rendering speed on one core: a ~4 KB HTML email with 10 tracked links.

    .venv/bin/python bench/render.py [--recipients 10000] [--rounds 5]

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
"""

from __future__ import annotations

import argparse
import email
import email.policy
import statistics
import time

import envoi.db.models  # noqa: F401 - every table mapped, so Email rows can be built
from envoi.core.tokens import MessageLinks, Signer
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


def run(compiled: CompiledMessage, recipients: int) -> float:
    people = [
        Recipient(
            i, f"user{i}@example.org", {"first_name": f"Name{i}", "city": "Lyon"}, {"shop": SHOP}
        )
        for i in range(recipients)
    ]
    started = time.process_time()
    for person in people:
        compiled.render(person)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sample = sample_email()
    links = MessageLinks("https://track.example.com", Signer("bench-secret-key-" * 3))
    context = MessageContext(1, 1, "S_1", "L", ("spring",), "bounces.example.com")
    started = time.process_time()
    compiled = compile_message(sample, sample.contents[0], context, links)
    compile_ms = (time.process_time() - started) * 1000
    if len(compiled.link_urls) != LINK_COUNT:
        raise SystemExit(f"expected {LINK_COUNT} tracked links, found {compiled.link_urls}")
    message = compiled.render(Recipient(0, "a@example.org", {"first_name": "A"}, {}))
    run(compiled, min(2000, args.recipients))  # warm-up
    rounds = sorted(run(compiled, args.recipients) for _ in range(args.rounds))
    written_sample = sample_email(written=True)
    written = compile_message(written_sample, written_sample.contents[0], context, links)
    sent = written.render(Recipient(0, "a@example.org", {}, {"shop": SHOP}))
    if written.link_urls or click_urls_with_target(sent) != 2 * LINK_COUNT:
        raise SystemExit("expected 10 written links in the HTML and the text part")
    written_rounds = sorted(run(written, args.recipients) for _ in range(args.rounds))
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
    print(f"token_sign_us: {sign_us:.1f}")
    print(f"token_sign_target_us: {sign_target_us:.1f}")
    print(f"written_renders_per_s: {args.recipients / written_rounds[0]:.0f}")
    print(f"render_us: {rounds[0] / args.recipients * 1e6:.0f}")
    print(f"renders_per_s_median: {args.recipients / statistics.median(rounds):.0f}")
    print(f"renders_per_s: {args.recipients / rounds[0]:.0f}")


if __name__ == "__main__":
    main()
