"""Where the rack's events go: an *event sink* is anything with ``publish(event)``.

:class:`~rackwatch.service.RackService` judges reps and hands every event (rep, not counted, set, state, health)
to one sink, the way Frigate hands its events to its communicators. Three sinks exist:

:class:`rackwatch.mqtt.RackLink`
    the rack at work: into the durable outbox, then to the broker. It is also the rack's command source (see
    :class:`CommandSource`), and it can be away (:class:`Link`).
:class:`ListSink`
    a list that keeps every event: what the tests of judging, the panel and the settings read, with no broker.
:class:`StdoutSink`
    one JSON line per event on standard output, the same JSON the broker would carry.
"""

from __future__ import annotations

import sys
from typing import Callable, Protocol, TextIO, runtime_checkable

from .commands import Command
from .events import Event
from .outbox import to_json


class EventSink(Protocol):
    """Takes the rack's events. ``publish`` returns once the event is the sink's responsibility."""

    def publish(self, event: Event) -> None: ...


class CommandSource(Protocol):
    """Hands remote commands to ``on_command`` (a function that accepts the command or raises
    :class:`rackwatch.commands.CommandRejected`), on a thread of its own."""

    on_command: Callable[[Command], None] | None


@runtime_checkable
class Link(EventSink, CommandSource, Protocol):
    """A sink that is the rack's line to the outside (the MQTT link): commands come in on it, and it can be cut
    off. The service shows ``connected`` on the status light and ``outbox_depth`` in the health events."""

    @property
    def connected(self) -> bool: ...

    @property
    def outbox_depth(self) -> int: ...

    def losses(self) -> dict[str, int | bool]:
        """What could not be delivered so far, by kind: the loss fields of the health event."""
        ...


class ListSink(list[Event]):
    """A list of the events published, in order: ``sink.publish(e)`` is ``sink.append(e)``.

    ``of_type("rep")`` picks one kind.
    """

    def publish(self, event: Event) -> None:
        self.append(event)

    def of_type(self, kind: str) -> list[Event]:
        return [event for event in self if event.type == kind]


class StdoutSink:
    """One event per line, as compact JSON (the very bytes the MQTT link would send), on ``out``."""

    def __init__(self, out: TextIO | None = None):
        self.out = out if out is not None else sys.stdout

    def publish(self, event: Event) -> None:
        print(to_json(event.to_wire()).decode("utf-8"), file=self.out, flush=True)
