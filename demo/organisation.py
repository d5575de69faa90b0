"""A seeded sample university (~92% students, ~8% staff) for the demo, written as the import CSV.

The mix is meant to look like a real campus: mostly Chinese names in Asia/Shanghai, a few
international students abroad, and channel bindings as patchy as real contact data.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from records.topics import ChannelName
from state.users import User
from state.users_import import BINDING_COLUMNS, COLUMNS

STAFF_SHARE = 0.08
UNDERGRADUATE_SHARE = 0.72  # of students
INTERNATIONAL_SHARE = 0.06  # of students
DEPARTMENTS = ("cs", "math", "physics", "chem", "bio", "econ", "law", "med", "lit", "ee")
DORMS = ("east", "west", "north", "south")
ON_CALL_SHARE = 0.05  # of administrative staff
ON_CALL_ROBOT = "campus-ops"  # the robot's name in config/providers.yaml
SHARES: dict[ChannelName, float] = {
    "inbox": 0.99, "email": 0.85, "sms": 0.90, "push": 0.60, "wechat_oa": 0.55, "wechat_mp": 0.25,
}
PREFERENCES: tuple[tuple[ChannelName | None, int], ...] = (
    ("inbox", 30), ("email", 18), ("push", 20), ("wechat_oa", 14), ("sms", 8), (None, 10),
)
ABROAD = (
    ("Asia/Seoul", "ko-KR", "+82 10"), ("Asia/Tokyo", "ja-JP", "+81 90"), ("Europe/London", "en-GB", "+44 7"),
    ("America/New_York", "en-US", "+1 212"), ("Asia/Singapore", "en-SG", "+65 8"),
    ("Europe/Berlin", "de-DE", "+49 151"), ("Australia/Sydney", "en-AU", "+61 4"),
)
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉萍红建文辉力宇浩然子涵欣怡梓轩雨萱思源嘉怡俊杰"
FIRST_NAMES = (
    "James", "Olivia", "Min-jun", "Seo-yeon", "Haruto", "Yui", "Liam", "Emma", "Noah", "Sophia",
    "Lucas", "Mia", "Lukas", "Hannah", "Ethan", "Chloe", "Aarav", "Priya", "Oliver", "Amelia",
)
LAST_NAMES = (
    "Smith", "Brown", "Kim", "Park", "Lee", "Tanaka", "Sato", "Müller", "Schmidt", "Wilson",
    "Taylor", "Tan", "Lim", "Nguyen", "Johnson", "Williams", "Jones", "Garcia", "Martin", "Clarke",
)


def generate_university(seed: int = 2026, size: int = 5000) -> list[User]:
    """The same `size` people for the same seed: students first, then staff."""
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    rng = random.Random(seed)
    staff = max(1, round(size * STAFF_SHARE)) if size > 1 else 0
    students = [_student(rng, n) for n in range(size - staff)]
    return students + [_staff(rng, n) for n in range(staff)]


def write_csv(users: list[User], path: str | Path) -> None:
    """Write users in the importer's CSV columns, so the demo goes through the real importer."""
    channel_column = {channel: column for column, channel in BINDING_COLUMNS.items()}
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for user in users:
            row = {
                "user_id": user.user_id, "name": user.name, "timezone": user.timezone, "locale": user.locale,
                "tags": ";".join(user.tags), "channel_pref": user.channel_pref or "",
                "inbox": "no",
            }
            for channel, address in user.bindings.items():
                if channel == "inbox" and address == user.user_id:
                    row["inbox"] = "yes"
                elif channel in channel_column:
                    row[channel_column[channel]] = address
                else:
                    raise ValueError(f"user {user.user_id}: binding {channel}={address!r} has no CSV column")
            writer.writerow(row)


def _student(rng: random.Random, n: int) -> User:
    undergraduate = rng.random() < UNDERGRADUATE_SHARE
    international = rng.random() < INTERNATIONAL_SHARE
    graduation = rng.choice((2026, 2027, 2028, 2029) if undergraduate else (2026, 2027, 2028))
    user_id = f"s{graduation - (4 if undergraduate else 3)}{n:05d}"
    tags = [
        "student", "undergraduate" if undergraduate else "postgraduate", f"year-{graduation}",
        f"dept-{rng.choice(DEPARTMENTS)}",
    ]
    if undergraduate or rng.random() < 0.4:
        tags.append(f"dorm-{rng.choice(DORMS)}")
    timezone, locale, phone = "Asia/Shanghai", "zh-CN", _cn_mobile(rng)
    if international:
        tags.append("international")
        timezone, locale, prefix = rng.choice(ABROAD)
        # Some international students have a Chinese SIM, the rest keep their home number.
        if rng.random() < 0.5:
            phone = f"{prefix} {rng.randrange(1000, 9999)} {rng.randrange(1000, 9999)}"
    name = _english_name(rng) if international else _chinese_name(rng)
    return _person(rng, user_id, name, tags, timezone, locale, phone, f"{user_id}@stu.example.edu.cn")


def _staff(rng: random.Random, n: int) -> User:
    faculty = rng.random() < 0.6
    tags = ["staff", "faculty" if faculty else "administration", f"dept-{rng.choice(DEPARTMENTS)}"]
    if not faculty and rng.random() < ON_CALL_SHARE:
        tags.append("on-call")  # IT staff on the incident rota: the ops robot's group and SMS
    foreign = rng.random() < 0.05
    name = _english_name(rng) if foreign else _chinese_name(rng)
    user_id = f"t{10000 + n}"
    return _person(
        rng, user_id, name, tags, "Asia/Shanghai", "en-US" if foreign else "zh-CN", _cn_mobile(rng),
        f"{user_id}@example.edu.cn",
    )


def _person(
    rng: random.Random, user_id: str, name: str, tags: list[str], timezone: str, locale: str, phone: str,
    email: str,
) -> User:
    addresses: dict[ChannelName, str] = {
        "inbox": user_id, "email": email, "sms": phone.replace(" ", ""),
        "push": _push_token(rng), "wechat_oa": _openid(rng), "wechat_mp": _openid(rng),
    }
    bindings = {channel: addresses[channel] for channel, share in SHARES.items() if rng.random() < share}
    if "on-call" in tags:
        bindings["robot"] = ON_CALL_ROBOT
    # Nobody prefers a channel they never gave an address for.
    preferences, weights = zip(
        *((c, w) for c, w in PREFERENCES if c is None or c in bindings), strict=True
    )
    return User(
        user_id=user_id, name=name, timezone=timezone, locale=locale, tags=tuple(tags),
        channel_pref=rng.choices(preferences, weights)[0], bindings=bindings,
    )


# Mainland mobile prefixes in service (phonenumbers' metadata), so the numbers pass address cleaning.
CN_MOBILE_PREFIXES = (130, 131, 132, 133, 135, 136, 137, 138, 139, 150, 151, 152, 155, 156, 157, 158, 159,
                      166, 176, 177, 178, 180, 181, 182, 183, 185, 186, 187, 188, 189, 191, 198, 199)


def _cn_mobile(rng: random.Random) -> str:
    return f"+86{rng.choice(CN_MOBILE_PREFIXES)}{rng.randrange(10**8):08d}"


def _push_token(rng: random.Random) -> str:
    """A device token written `<provider>:<token>`: Android phones on FCM or JPush, iPhones on APNs."""
    kind = rng.choices(("fcm", "apns", "jpush"), (45, 40, 15))[0]
    if kind == "apns":
        return f"apns:{rng.getrandbits(256):064x}"
    if kind == "jpush":
        return f"jpush:{rng.randrange(10**17, 10**18)}"
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "fcm:" + "".join(rng.choice(alphabet) for _ in range(22)) + ":APA91b" + "".join(
        rng.choice(alphabet) for _ in range(134)
    )


def _openid(rng: random.Random) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "o" + "".join(rng.choice(alphabet) for _ in range(27))


def _chinese_name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))


def _english_name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
