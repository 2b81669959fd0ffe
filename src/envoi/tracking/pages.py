"""What the tracking endpoints answer with: the pixel, and the small HTML pages a
recipient sees (unsubscribe confirmation, forward form, errors).

The pages are plain HTML written here rather than Jinja templates: a handful of fixed
sentences with one or two escaped values each, and no per-project styling yet. They
are in English; the message's own footer links are in its language (`delivery/render`).
"""

from __future__ import annotations

import base64
import html

# The smallest transparent GIF (43 bytes): what an open pixel and a goal pixel answer.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

_STYLE = (
    "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:32rem;"
    "margin:4rem auto;padding:0 1rem;color:#222;line-height:1.5}"
    "button{font-size:1rem;padding:.5rem 1.25rem;cursor:pointer}"
    "input{font-size:1rem;padding:.4rem;width:100%;box-sizing:border-box;margin:.25rem 0 .75rem}"
)


def page(title: str, *paragraphs: str, form: str = "") -> str:
    """A whole page; `title` and `paragraphs` are text (escaped here), `form` is HTML."""
    body = "".join(f"<p>{html.escape(text)}</p>" for text in paragraphs)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="robots" content="noindex,nofollow">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}{form}</body></html>"
    )


NOT_FOUND = page("Link not valid", "This link is not valid, or the message it belongs to is gone.")
UNAVAILABLE = page("Try again later", "We could not take your request just now. Please retry.")


def unsubscribe_form(recipient: str | None, category: str | None) -> str:
    """The confirmation page of `/t/u/`: GET shows it, its button POSTs."""
    what = f"“{category}” emails" if category else "these emails"
    question = f"Stop sending {what} to {recipient}?" if recipient else f"Stop sending {what}?"
    form = (
        '<form method="post"><input type="hidden" name="unsubscribe" value="yes">'
        "<button type=submit>Unsubscribe</button></form>"
    )
    return page("Unsubscribe", question, form=form)


def unsubscribed(category: str | None) -> str:
    what = f"“{category}” emails" if category else "these emails"
    return page("You are unsubscribed", f"You will no longer receive {what}.")


def already_unsubscribed(category: str | None) -> str:
    what = f"“{category}” emails" if category else "these emails"
    return page("You are unsubscribed", f"You had already unsubscribed from {what}.")


def forward_form(left: int) -> str:
    """The form of `/t/f/`: a friend's address and, optionally, name."""
    if left <= 0:
        return forward_limited()
    form = (
        '<form method="post"><label>Your friend&#39;s email address'
        '<input type="email" name="email" required maxlength="254"></label>'
        '<label>Their name (optional)<input type="text" name="name" maxlength="100"></label>'
        "<button type=submit>Send</button></form>"
    )
    return page("Forward to a friend", "We will send this message to them.", form=form)


def forwarded() -> str:
    return page("Sent", "Your friend will receive this message shortly.")


def forward_refused(reason: str) -> str:
    return page("Not sent", reason)


def forward_limited() -> str:
    return page("Not sent", "This message has been forwarded as many times as it may be.")


def bad_request(reason: str) -> str:
    return page("Not understood", reason)
