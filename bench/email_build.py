"""Bench: CPU microseconds to build and flatten one email, the old way and the new way.

"before" is the builder the SMTP adapter used until the hand-assembled one: an `EmailMessage` with
the SMTP policy (List-Unsubscribe folded between its links), `set_content` / `add_alternative`,
flattened with `as_bytes()`. "after" is `SmtpEmail.build` (channels/email_mime.py), which returns
the bytes it sends ("no link": the same mail without List-Unsubscribe, whose signed link costs
~14 µs of the "after" figure). Each shape is timed on the process CPU clock (`time.process_time`), so the
figures hold on a busy machine; the best of `--repeat` rounds is reported.

Run: .venv/bin/python bench/email_build.py [--messages 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from email.utils import formatdate
from functools import partial
from urllib.parse import quote

from pydantic import SecretStr

from channels.email_smtp import MESSAGE_ID_HEADER, UNSUBSCRIBABLE, SmtpEmail
from channels.links import LinkSigner
from channels.templates import RenderedMessage
from records.topics import Dispatch, EventCore

SIGNER = LinkSigner(SecretStr("bench-link-secret-0123456789abcdef"), "https://notify.uni.example.edu")
SENDER = "教务处 Academic Affairs <noreply@uni.example.edu>"
DISPATCH = Dispatch(
    message_id="3f9a1c2b7d4e5f6a8b9c0d1e", user_id="u1", channel="email", address="li.wei@uni.example.edu",
    event=EventCore(event_id="e1", app="academic", type="reminder", template="course_reminder",
                    category="notice"),
    rule_id="r1", rule_version="1",
)
SHAPES = {
    "ascii, text+html": RenderedMessage(
        template="t", channel="email", subject="Reminder: Linear Algebra at 08:00 in room 204",
        text="Dear Li Wei,\n\nLinear Algebra starts at 08:00 tomorrow in room 204.\n\nAcademic Affairs\n",
        html="<p>Dear Li Wei,</p><p>Linear Algebra starts at <b>08:00</b> tomorrow in room 204.</p>",
    ),
    "chinese, text+html": RenderedMessage(
        template="t", channel="email", subject="提醒：线性代数明天 08:00 在 204 教室上课，请准时到场",
        text="李伟同学：\n\n线性代数明天 08:00 在 204 教室上课。请携带学生证。\n\n教务处\n" * 3,
        html="<p>李伟同学：</p><p>线性代数明天 <b>08:00</b> 在 204 教室上课。</p>" * 3,
    ),
    "ascii, text only": RenderedMessage(
        template="t", channel="email", subject="Your login code", text="Your code is 482913.\n",
    ),
}


class _OldPolicy(policy.EmailPolicy):
    """The adapter's former policy: List-Unsubscribe folded only between its URLs."""

    def fold(self, name: str, value: str) -> str:
        if name.lower() == "list-unsubscribe":
            return f"{name}: " + str(value).replace(", ", f",{self.linesep} ") + self.linesep
        return str(super().fold(name, value))

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() == "list-unsubscribe":
            return self.fold(name, value).encode("ascii")
        return bytes(super().fold_binary(name, value))


OLD_POLICY = _OldPolicy(linesep="\r\n")


def old_build(message: RenderedMessage, address: str, dispatch: Dispatch, domain: str) -> bytes:
    """The former `SmtpEmail.build` followed by the flattening aiosmtplib did, as bytes."""
    email = EmailMessage(policy=OLD_POLICY)
    email["From"] = SENDER
    email["To"] = address
    email["Subject"] = message.subject
    email["Date"] = formatdate(localtime=False, usegmt=True)
    email["Message-ID"] = f"<{dispatch.message_id}.{dispatch.step}@{domain}>"
    email[MESSAGE_ID_HEADER] = dispatch.message_id
    if dispatch.event.category in UNSUBSCRIBABLE:
        url = SIGNER.unsubscribe_url(dispatch)
        token = url.rsplit("/", 1)[1]
        email["List-Unsubscribe"] = ", ".join(
            [f"<{url}>", f"<mailto:unsubscribe@uni.example.edu?subject={quote('unsubscribe ' + token)}>"]
        )
        email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    email.set_content(message.text)
    if message.html:
        email.add_alternative(message.html, subtype="html")
    return email.as_bytes()


def cpu_us_per_message(build: Callable[[], bytes], messages: int, repeat: int) -> float:
    """The best round's process CPU time per call, in microseconds."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.process_time()
        for _ in range(messages):
            build()
        best = min(best, time.process_time() - start)
    return best / messages * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    adapter = SmtpEmail(
        "127.0.0.1", 25, SENDER, links=SIGNER, unsubscribe_mailto="unsubscribe@uni.example.edu"
    )
    address = DISPATCH.address
    # A transactional mail has no List-Unsubscribe: the "no link" column leaves out signing the link.
    transactional = DISPATCH.event.model_copy(update={"category": "transactional"})
    unlinked = DISPATCH.model_copy(update={"event": transactional})
    print(f"{'message':<22}{'before µs':>11}{'after µs':>10}{'speed-up':>10}{'no link µs':>12}"
          f"{'bytes before/after':>21}")
    for name, message in SHAPES.items():
        before = cpu_us_per_message(partial(old_build, message, address, DISPATCH, "uni.example.edu"),
                                    args.messages, args.repeat)
        after = cpu_us_per_message(partial(adapter.build, message, address, DISPATCH),
                                   args.messages, args.repeat)
        bare = cpu_us_per_message(partial(adapter.build, message, address, unlinked),
                                  args.messages, args.repeat)
        sizes = f"{len(old_build(message, address, DISPATCH, 'uni.example.edu'))}/"
        sizes += f"{len(adapter.build(message, address, DISPATCH))}"
        print(f"{name:<22}{before:>11.1f}{after:>10.1f}{before / after:>9.0f}x{bare:>12.1f}{sizes:>21}")


if __name__ == "__main__":
    main()
