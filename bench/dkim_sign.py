"""DKIM signing speed on one core: rsa-sha256 (2048 bits) and ed25519-sha256.

    .venv/bin/python bench/dkim_sign.py [--messages 2000] [--rounds 5]

(Not `bench/dkim.py`: as a module named `dkim` it would shadow dkimpy, for mypy over
the repository and for any script in bench/.)

Signs the rendered message of bench/render.py (about 7 KB: headers, text and HTML
parts) N times per algorithm with envoi's signer (relaxed/relaxed canonicalisation
here, RSA and Ed25519 in OpenSSL through `cryptography`) and prints the figures last,
one `name: value` per line. Times are this process's CPU time (one core), so that
other work on the machine counts less; each figure is the best of ROUNDS rounds.
tests/test_dkim.py verifies such signatures with dkimpy.
"""

from __future__ import annotations

import argparse
import time

# bench/render.py, beside this file (a script's folder is first on sys.path): the same
# sample email.
from render import sample_email

from envoi.core.tokens import MessageLinks, Signer
from envoi.delivery.dkim import DkimSigner, generate_key
from envoi.delivery.render import MessageContext, Recipient, compile_message


def sample_message() -> bytes:
    email = sample_email()
    links = MessageLinks("https://track.example.com", Signer("bench-secret-key"))
    context = MessageContext(1, 1, "S_1", "L", ("spring",), "bounces.example.com")
    compiled = compile_message(email, email.contents[0], context, links)
    recipient = Recipient(1, "user@example.org", {"first_name": "Anna", "city": "Lyon"}, {})
    data: bytes = compiled.render(recipient)
    return data


def signs_per_s(signer: DkimSigner, message: bytes, count: int, rounds: int) -> float:
    signer.sign(message)  # warm-up
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(count):
            signer.sign(message)
        best = min(best, time.process_time() - started)
    return count / best


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    message = sample_message()
    figures: dict[str, float] = {}
    for algorithm in ("rsa", "ed25519"):
        pem, _ = generate_key(algorithm)
        signer = DkimSigner("example.com", "bench", pem)
        figures[algorithm] = signs_per_s(signer, message, args.messages, args.rounds)
    print(f"message_bytes: {len(message)}")
    print(f"messages: {args.messages}")
    print(f"rsa_signs_per_s: {figures['rsa']:.0f}")
    print(f"ed25519_signs_per_s: {figures['ed25519']:.0f}")


if __name__ == "__main__":
    main()
