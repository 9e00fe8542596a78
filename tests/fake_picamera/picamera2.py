"""A stand-in for Picamera2, the one seam that cannot run here (no Pi camera): ``import picamera2`` finds this
module when ``tests/fake_picamera`` is on the path.

The camera "films" the images in :data:`IMAGES` (RGB, looped, then holding the last one), one per frame period
as set by ``FrameDurationLimits``, and hands them out as ``capture_array`` does, in the byte order of the format
asked for. A test in this process sets ``IMAGES``; a test running ``rackwatch run`` in a child process names an
``.npy`` file of images in ``$FAKE_PICAMERA_FRAMES``. The configuration asked for is kept in ``instances`` and,
if ``$FAKE_PICAMERA_LOG`` names a file, written there as JSON.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

IMAGES: list[np.ndarray] = list(np.load(os.environ["FAKE_PICAMERA_FRAMES"])) \
    if os.environ.get("FAKE_PICAMERA_FRAMES") else []
instances: list["Picamera2"] = []


class Picamera2:
    def __init__(self):
        self.config = None
        self.started = self.closed = False
        self._next = 0
        self._due = 0.0
        instances.append(self)

    def create_video_configuration(self, main=None, buffer_count=None, controls=None, **other):
        return {"main": main, "buffer_count": buffer_count, "controls": controls, **other}

    def configure(self, config):
        self.config = config
        if os.environ.get("FAKE_PICAMERA_LOG"):
            with open(os.environ["FAKE_PICAMERA_LOG"], "w") as log:
                json.dump(config, log)

    def start(self):
        self.started = True
        self._due = time.monotonic()

    def capture_array(self, stream="main"):
        assert self.started and stream == "main"
        # One frame per frame period, like the sensor under FrameDurationLimits.
        self._due += self.config["controls"]["FrameDurationLimits"][0] / 1e6
        time.sleep(max(0.0, self._due - time.monotonic()))
        image = IMAGES[min(self._next, len(IMAGES) - 1)]
        self._next += 1
        # Picamera2 names formats by their 32-bit word: BGR888 holds R, G, B in memory, RGB888 holds B, G, R.
        return image if self.config["main"]["format"] == "BGR888" else image[:, :, ::-1].copy()

    def stop(self):
        self.started = False

    def close(self):
        self.closed = True
