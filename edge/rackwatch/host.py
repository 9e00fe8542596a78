"""The machine the rack runs on: telling systemd how the service is doing, how the Pi itself is doing, and
whether it has GPIO pins for the panel.

All are optional on any other machine: without ``$NOTIFY_SOCKET`` the notifier does nothing, where the kernel
or ``vcgencmd`` does not report temperature or throttling the health event says ``null``, and without GPIO pins
:func:`gpio_pin_factory` says ``None``.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
import warnings
from typing import Any, Mapping

log = logging.getLogger(__name__)

THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")


class SystemdNotifier:
    """``sd_notify`` in a few lines: datagrams to ``$NOTIFY_SOCKET``; does nothing when it is not set."""

    def __init__(self, environ: Mapping[str, str] = os.environ):
        address = environ.get("NOTIFY_SOCKET") or ""
        if address.startswith("@"):   # an abstract socket
            address = "\0" + address[1:]
        self.address = address or None
        self._socket: socket.socket | None = None
        self._last_watchdog = 0.0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, message: str) -> bool:
        if not self.address:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(message.encode(), self.address)
            return True
        except OSError as exc:
            log.debug("sd_notify %r failed: %s", message, exc)
            return False

    def watchdog(self, every: float = 1.0) -> None:
        """``WATCHDOG=1``, at most once per ``every`` seconds (call it as often as you like)."""
        now = time.monotonic()
        if self.address and now - self._last_watchdog >= every:
            self._last_watchdog = now
            self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def cpu_temperature(path: Path = THERMAL_ZONE) -> float | None:
    """The SoC temperature in °C, or ``None`` where the kernel does not report one."""
    try:
        return round(int(path.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


def throttled() -> bool | None:
    """Whether the Pi is throttling right now (under-voltage, frequency cap, thermal limit), from
    ``vcgencmd get_throttled``; ``None`` where vcgencmd is not available."""
    vcgencmd = shutil.which("vcgencmd")
    if vcgencmd is None:
        return None
    try:
        out = subprocess.run([vcgencmd, "get_throttled"], capture_output=True, text=True, timeout=2).stdout
        bits = int(out.strip().split("=", 1)[1], 16)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    return bool(bits & 0xF)   # bits 0-3: happening now; 16-19 would be "has happened since boot"


def gpio_pin_factory() -> Any:
    """gpiozero's pin factory when this machine has GPIO pins (a Pi), else ``None``.

    gpiozero picks the factory itself (lgpio first; ``$GPIOZERO_PIN_FACTORY`` overrides) when asked through
    its public ``Device.ensure_pin_factory()``; on a laptop every one of them fails, which is the answer.
    """
    try:
        from gpiozero import Device
        from gpiozero.exc import BadPinFactory
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # gpiozero warns about every library it tries
        try:
            Device.ensure_pin_factory()
        except (BadPinFactory, ImportError, OSError, RuntimeError):
            return None
    return Device.pin_factory
