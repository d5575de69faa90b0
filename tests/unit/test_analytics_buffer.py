"""ReceiptBuffer: a flush is due by row count or by the age of the oldest held receipt."""

from __future__ import annotations

import pytest

from analytics.sink import ReceiptBuffer
from records.topics import Receipt


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def receipt(n: int) -> Receipt:
    return Receipt(message_id=f"m{n}", channel="sms", status="sent")


def test_empty_buffer_is_never_due() -> None:
    clock = FakeClock()
    buffer = ReceiptBuffer(max_rows=2, max_age=1.0, clock=clock)
    clock.now += 60
    assert not buffer.due()
    assert buffer.seconds_until_due() is None
    assert len(buffer) == 0


def test_due_when_row_count_reached() -> None:
    buffer = ReceiptBuffer(max_rows=3, max_age=10.0, clock=FakeClock())
    assert buffer.add(receipt(1)) is False
    assert buffer.add(receipt(2)) is False
    assert buffer.add(receipt(3)) is True
    assert buffer.seconds_until_due() == 0.0


def test_extend_past_the_limit_is_due_at_once() -> None:
    buffer = ReceiptBuffer(max_rows=3, max_age=10.0, clock=FakeClock())
    assert buffer.extend(receipt(n) for n in range(5)) is True
    assert len(buffer) == 5


def test_due_when_oldest_receipt_is_old_enough() -> None:
    clock = FakeClock()
    buffer = ReceiptBuffer(max_rows=100, max_age=0.5, clock=clock)
    buffer.add(receipt(1))
    clock.now += 0.3
    buffer.add(receipt(2))  # a later receipt does not restart the age
    assert not buffer.due()
    assert buffer.seconds_until_due() == pytest.approx(0.2)
    clock.now += 0.2
    assert buffer.due()


def test_drain_hands_over_in_order_and_resets_the_age() -> None:
    clock = FakeClock()
    buffer = ReceiptBuffer(max_rows=100, max_age=0.5, clock=clock)
    buffer.extend([receipt(1), receipt(2)])
    clock.now += 1.0
    assert [r.message_id for r in buffer.drain()] == ["m1", "m2"]
    assert len(buffer) == 0 and not buffer.due()
    buffer.add(receipt(3))
    assert not buffer.due()
    assert buffer.seconds_until_due() == pytest.approx(0.5)


@pytest.mark.parametrize(("max_rows", "max_age", "named"), [(0, 1.0, "max_rows"), (10, 0.0, "max_age")])
def test_bad_limits_are_named(max_rows: int, max_age: float, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        ReceiptBuffer(max_rows=max_rows, max_age=max_age)
