"""realtime-ser: real-time speech-emotion tracking.

Heavy modules (onnxruntime, sounddevice, rich) are imported lazily by the
modules that need them, so ``import realtime_ser`` and ``realtime-ser --help``
stay fast.
"""

__version__ = "0.1.0"

SAMPLE_RATE = 16_000
"""The one internal sample rate: every source is converted to 16 kHz mono float32."""
