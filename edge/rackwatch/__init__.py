"""rackwatch: a squat-rack form monitor for the Raspberry Pi."""

__version__ = "0.1.0"
