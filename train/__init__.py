"""Training side of realtime-ser: corpora, windows, features, speaker-independent evaluation,
report, ONNX export. Imports realtime_ser's features / vad / normalize / windowing / model, never its
pipeline or sinks. Run it as ``python -m train evaluate|export|all``."""
