"""States of a webhook delivery."""

from __future__ import annotations

from enum import StrEnum


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # written with its event, not tried yet (or re-sent by hand)
    FAILED = "failed"  # tried and failed; tried again at next_attempt_at
    DELIVERED = "delivered"  # the receiver answered 2xx
    DEAD = "dead"  # out of attempts (or its sender died on the last one); re-sent only by hand


# What the sender picks up once next_attempt_at has come.
DUE = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)
