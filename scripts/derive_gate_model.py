"""Derive the speech gate's shipped model from Silero's ``silero_vad_16k_sequence.onnx`` (docs/gate.md, Cost).

Same network, same weights, same inputs and outputs; only the operators change. onnxruntime runs
Silero's convolutions as many tiny per-frame convolutions (one frame = 4 STFT columns), which cost
most of the gate's time. Here every convolution becomes one matrix product over all the frames of a
call: the STFT (a 258-filter, 256-tap, stride-128 convolution) is the 128-sample chunks of each padded
frame times the two halves of the basis, the products of consecutive chunks then added; each encoder
convolution (kernel 3, padding 1, stride 1 or 2) is a zero Pad, a Gather of the 3-tap neighbourhoods
and a MatMul; the 1x1 output convolution is a MatMul.
The LSTM node is kept. Probabilities equal the original's to float rounding (checked below).

Usage (needs the ``onnx`` package, a dev dependency):
    python scripts/derive_gate_model.py SILERO_16K_SEQUENCE_ONNX OUT_ONNX
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

STFT_PAD = 128  # Silero pads each 576-sample block by reflection, 128 samples a side
N_FFT = 256
STFT_HOP = 128
STFT_COLUMNS = 4  # Silero keeps columns 1..4 of the 5 the padded block gives
BINS = N_FFT // 2 + 1
KERNEL = 3
ENCODER_STRIDES = (1, 2, 2, 1)
OPSET = 16
ATOL = 1e-4  # float rounding (the probabilities agree to ~1e-6)


def _conv_as_matmul(nodes: list, inits: list, x: str, length: int, stride: int, w: np.ndarray, b: np.ndarray,
                    name: str) -> tuple[str, int]:
    """x: (S, length, Cin) -> ReLU(conv1d(k=3, pad 1, stride)) as (S, length_out, Cout)."""
    cout, cin, k = w.shape
    out_len = (length + 2 - k) // stride + 1
    idx = (np.arange(out_len)[:, None] * stride + np.arange(k)[None, :]).astype(np.int64)
    inits += [numpy_helper.from_array(np.array([0, 1, 0, 0, 1, 0], np.int64), f"{name}.pads"),
              numpy_helper.from_array(idx, f"{name}.idx"),
              numpy_helper.from_array(np.array([0, out_len, k * cin], np.int64), f"{name}.shape"),
              # W[o, c, k] -> rows ordered (k, c), matching the gathered (S, out_len, k, Cin) layout
              numpy_helper.from_array(np.ascontiguousarray(w.transpose(2, 1, 0).reshape(k * cin, cout)), f"{name}.w"),
              numpy_helper.from_array(b.astype(np.float32), f"{name}.b")]
    nodes += [helper.make_node("Pad", [x, f"{name}.pads"], [f"{name}.padded"], mode="constant"),
              helper.make_node("Gather", [f"{name}.padded", f"{name}.idx"], [f"{name}.taps"], axis=1),
              helper.make_node("Reshape", [f"{name}.taps", f"{name}.shape"], [f"{name}.cols"]),
              helper.make_node("MatMul", [f"{name}.cols", f"{name}.w"], [f"{name}.mm"]),
              helper.make_node("Add", [f"{name}.mm", f"{name}.b"], [f"{name}.pre"]),
              helper.make_node("Relu", [f"{name}.pre"], [f"{name}.out"])]
    return f"{name}.out", out_len


def derive(src: onnx.ModelProto) -> onnx.ModelProto:
    w = {i.name: numpy_helper.to_array(i) for i in src.graph.initializer}
    nodes: list = []
    inits: list = []
    basis = w["stft.forward_basis_buffer"][:, 0, :]  # (258, 256)
    # column i of a block = padded samples [(i + 1) * 128, (i + 3) * 128): 128-sample chunks 1..5, each column
    # spanning two consecutive chunks. One MatMul of the chunks by both halves of the basis, then a shifted add.
    halves = np.concatenate([basis[:, :STFT_HOP].T, basis[:, STFT_HOP:].T], axis=1)  # (128, 516)
    chunks = STFT_COLUMNS + 1
    inits += [numpy_helper.from_array(np.array([0, STFT_PAD, 0, STFT_PAD], np.int64), "stft.pads"),
              numpy_helper.from_array(np.array([STFT_HOP], np.int64), "stft.from"),
              numpy_helper.from_array(np.array([STFT_HOP * (chunks + 1)], np.int64), "stft.to"),
              numpy_helper.from_array(np.array([1], np.int64), "stft.time_axis"),
              numpy_helper.from_array(np.array([0, chunks, STFT_HOP], np.int64), "stft.chunk_shape"),
              numpy_helper.from_array(np.ascontiguousarray(halves), "stft.basis"),
              numpy_helper.from_array(np.array([0, 0], np.int64), "stft.left_start"),
              numpy_helper.from_array(np.array([STFT_COLUMNS, 2 * BINS], np.int64), "stft.left_end"),
              numpy_helper.from_array(np.array([1, 2 * BINS], np.int64), "stft.right_start"),
              numpy_helper.from_array(np.array([chunks, 4 * BINS], np.int64), "stft.right_end"),
              numpy_helper.from_array(np.array([1, 2], np.int64), "stft.axes12"),
              numpy_helper.from_array(np.array([0], np.int64), "stft.re_start"),
              numpy_helper.from_array(np.array([BINS], np.int64), "stft.im_start"),
              numpy_helper.from_array(np.array([2 * BINS], np.int64), "stft.im_end"),
              numpy_helper.from_array(np.array([2], np.int64), "stft.axis")]
    nodes += [helper.make_node("Pad", ["input", "stft.pads"], ["stft.padded"], mode="reflect"),
              helper.make_node("Slice", ["stft.padded", "stft.from", "stft.to", "stft.time_axis"], ["stft.used"]),
              helper.make_node("Reshape", ["stft.used", "stft.chunk_shape"], ["stft.chunks"]),  # (S, 5, 128)
              helper.make_node("MatMul", ["stft.chunks", "stft.basis"], ["stft.halves"]),  # (S, 5, 516)
              helper.make_node("Slice", ["stft.halves", "stft.left_start", "stft.left_end", "stft.axes12"],
                               ["stft.left"]),
              helper.make_node("Slice", ["stft.halves", "stft.right_start", "stft.right_end", "stft.axes12"],
                               ["stft.right"]),
              helper.make_node("Add", ["stft.left", "stft.right"], ["stft.spec"]),  # (S, 4, 258)
              helper.make_node("Slice", ["stft.spec", "stft.re_start", "stft.im_start", "stft.axis"], ["stft.re"])]
    nodes += [helper.make_node("Slice", ["stft.spec", "stft.im_start", "stft.im_end", "stft.axis"], ["stft.im"]),
              helper.make_node("Mul", ["stft.re", "stft.re"], ["stft.re2"]),
              helper.make_node("Mul", ["stft.im", "stft.im"], ["stft.im2"]),
              helper.make_node("Add", ["stft.re2", "stft.im2"], ["stft.pow"]),
              helper.make_node("Sqrt", ["stft.pow"], ["stft.mag"])]  # (S, 4, 129)
    x, length = "stft.mag", STFT_COLUMNS
    for i, stride in enumerate(ENCODER_STRIDES):
        x, length = _conv_as_matmul(nodes, inits, x, length, stride, w[f"encoder.{i}.weight"], w[f"encoder.{i}.bias"],
                                    f"encoder.{i}")
    assert length == 1  # (S, 1, 128) = the LSTM's (sequence, batch, input)
    lstm = next(n for n in src.graph.node if n.op_type == "LSTM")
    for name in lstm.input[1:4]:
        inits.append(numpy_helper.from_array(w[name], name))
    nodes.append(helper.make_node("LSTM", [x, *lstm.input[1:4], "", "h", "c"], ["lstm.y", "hn", "cn"],
                                  hidden_size=128))
    inits += [numpy_helper.from_array(np.array([-1, 128], np.int64), "out.shape"),
              numpy_helper.from_array(np.ascontiguousarray(w["output.weight"][:, :, 0].T), "out.w"),
              numpy_helper.from_array(w["output.bias"], "out.b"),
              numpy_helper.from_array(np.array([-1], np.int64), "out.flat")]
    nodes += [helper.make_node("Reshape", ["lstm.y", "out.shape"], ["lstm.flat"]),  # (S, 128)
              helper.make_node("Relu", ["lstm.flat"], ["out.relu"]),
              helper.make_node("MatMul", ["out.relu", "out.w"], ["out.mm"]),
              helper.make_node("Add", ["out.mm", "out.b"], ["out.logit"]),
              helper.make_node("Sigmoid", ["out.logit"], ["out.p"]),
              helper.make_node("Reshape", ["out.p", "out.flat"], ["speech_probs"])]
    graph = helper.make_graph(nodes, "silero_vad_16k_sequence_matmul", list(src.graph.input), list(src.graph.output),
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="realtime-ser scripts/derive_gate_model.py")
    model.ir_version = src.ir_version
    onnx.checker.check_model(model)
    return model


def _check(src_path: str, out_path: str) -> float:
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    t = np.arange(40 * 512) / 16_000
    x = (0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.3 * np.sin(t)))
         + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    frames = x.reshape(-1, 512)
    block = np.zeros((len(frames), 576), np.float32)
    block[:, 64:] = frames
    block[1:, :64] = frames[:-1, -64:]
    feeds = {"input": block, "h": np.zeros((1, 1, 128), np.float32), "c": np.zeros((1, 1, 128), np.float32)}
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    a = ort.InferenceSession(src_path, opts, providers=["CPUExecutionProvider"]).run(None, feeds)
    b = ort.InferenceSession(out_path, opts, providers=["CPUExecutionProvider"]).run(None, feeds)
    return max(float(np.abs(u - v).max()) for u, v in zip(a, b, strict=True))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    src, out = argv
    onnx.save(derive(onnx.load(src)), out)
    diff = _check(src, out)
    print(f'{{"max_abs_diff": {diff:.3g}}}')
    if diff > ATOL:
        print(f"derived model differs from the original by {diff:.3g} (> {ATOL:g})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
