"""String enums for task states and claim strategies. Members compare equal to their strings."""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"  # terminal: the dead letter
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


class Strategy(str, Enum):
    FIFO = "fifo"  # oldest due task first
    LIFO = "lifo"  # newest due task first
    PRIORITY = "priority"  # lowest priority number first, then FIFO
    WEIGHTED_RANDOM = "weighted_random"  # chance proportional to 1/priority

    def __str__(self) -> str:
        return self.value
