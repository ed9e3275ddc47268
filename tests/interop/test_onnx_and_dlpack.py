"""ONNX export checked by running the file in onnxruntime against gradflow's own outputs
(float32, 1e-5), and zero-copy DLPack exchange with torch on the CPU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import gradflow as gf
from gradflow import layers as L
from gradflow.interop import InteropError, export_onnx, run_onnx

ROOT = Path(__file__).resolve().parents[2]


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_export_matches(model, x, tmp_path, name="m.onnx"):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    path = export_onnx(model, x, tmp_path / name)
    expected = gf.to_numpy(model.predict(gf.device("cpu").send(x)))
    for batch in (x, np.concatenate([x, x[:1]])):  # the batch axis is dynamic
        got = run_onnx(path, batch)
        want = expected if batch is x else gf.to_numpy(model.predict(batch))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_digits_cnn_exports_and_runs_in_onnxruntime(tmp_path):
    model = _example("digits_cnn").build_model(seed=3)
    model.train()
    model(np.random.default_rng(0).normal(size=(16, 1, 8, 8)).astype(np.float32), train=True)  # running stats
    model.eval()
    _assert_export_matches(model, np.random.default_rng(1).normal(size=(4, 1, 8, 8)).astype(np.float32), tmp_path)


def test_a_small_causal_transformer_exports_and_runs_in_onnxruntime(tmp_path):
    model = _example("char_transformer").build_model(vocab=11, context=6, dim=16, heads=2, blocks=2)
    ids = np.random.default_rng(2).integers(0, 11, size=(3, 6))
    _assert_export_matches(model, ids, tmp_path)


@pytest.mark.parametrize("layer, shape", [
    (gf.Sequential(L.Linear(6, 4), L.GELU(), L.Linear(4, 5), L.SiLU(), L.LogSoftmax()), (3, 6)),
    (gf.Sequential(L.LayerNorm(6), L.Linear(6, 6), L.GELU("tanh")), (2, 3, 6)),
    (gf.Sequential(L.Linear(6, 4, activation="relu"), L.Linear(4, 3, activation="gelu"),
                   L.Linear(3, 2, activation="gelu_tanh", bias=False)), (3, 6)),
    (gf.Sequential(L.Linear(6, 5, activation="gelu")), (2, 3, 6)),
    (gf.Sequential(L.Conv1d(2, 4, 3, padding=1, dilation=1), L.BatchNorm1d(4), L.LeakyReLU(0.2),
                   L.AvgPool1d(2), L.Flatten(), L.Linear(8, 3)), (2, 2, 4)),
    (gf.Sequential(L.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1), L.ELU(), L.GlobalAvgPool()), (2, 2, 3, 3)),
    (gf.Residual(gf.Sequential(L.Linear(4, 4), L.Tanh())), (5, 4)),
    (gf.Concat(L.Linear(4, 2), L.Sigmoid(), axis=-1), (5, 4)),
    (gf.Sequential(L.MultiHeadAttention(8, 2, causal=False), L.Softmax()), (2, 3, 8)),
    (gf.Sequential(L.SinusoidalPositionalEncoding(8), L.Dropout(0.5)), (2, 4, 8)),
])
def test_each_exportable_layer_matches_onnxruntime(layer, shape, tmp_path):
    x = np.random.default_rng(4).normal(size=shape).astype(np.float32)
    _assert_export_matches(layer.eval(), x, tmp_path)


def test_a_layer_without_a_converter_is_named_before_anything_is_written(tmp_path):
    pytest.importorskip("onnx")
    model = gf.Sequential(L.Linear(4, 4), L.LSTM(4, 3))
    with pytest.raises(InteropError, match=r"cannot export LSTM\("):
        export_onnx(model, np.zeros((2, 5, 4), np.float32), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_export_rejects_bad_arguments(tmp_path):
    pytest.importorskip("onnx")
    with pytest.raises(TypeError, match="model must be a gradflow Layer"):
        export_onnx("model", np.zeros((1, 2)), tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="opset must be an int >= 17"):
        export_onnx(L.Linear(2, 2), np.zeros((1, 2)), tmp_path / "x.onnx", opset=11)


@pytest.mark.parametrize("norm_first, activation, memory_dim", [(True, "gelu", None), (False, "relu", None),
                                                                 (True, "gelu_tanh", 6)])
def test_a_decoder_block_exports_with_its_memory_as_a_second_input_and_matches_onnxruntime(
        norm_first, activation, memory_dim, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    block = L.TransformerDecoderBlock(8, 2, mlp_ratio=2.0, activation=activation, norm_first=norm_first,
                                      memory_dim=memory_dim, rng=5).eval()
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 5, 8)).astype(np.float32)
    memory = rng.normal(size=(2, 3, memory_dim or 8)).astype(np.float32)
    path = export_onnx(block, x, tmp_path / "decoder.onnx", memory=memory)
    for batch_x, batch_memory in ((x, memory), (np.concatenate([x, x[:1]]), np.concatenate([memory, memory[:1]]))):
        want = gf.to_numpy(block.predict(batch_x, memory=batch_memory))
        np.testing.assert_allclose(run_onnx(path, batch_x, memory=batch_memory), want, rtol=1e-5, atol=1e-5)
    # the causal mask is in the graph: a later step of x does not change earlier outputs
    later = x.copy()
    later[:, -1] += 1.0
    np.testing.assert_allclose(run_onnx(path, later, memory=memory)[:, :-1], run_onnx(path, x, memory=memory)[:, :-1],
                               rtol=1e-6, atol=1e-6)


def test_a_post_norm_encoder_block_exports_with_its_own_norm_order(tmp_path):
    block = L.TransformerEncoderBlock(8, 2, mlp_ratio=2.0, norm_first=False, causal=True, rng=7).eval()
    _assert_export_matches(block, np.random.default_rng(8).normal(size=(2, 4, 8)).astype(np.float32), tmp_path)


def test_a_decoder_without_memory_or_memory_without_a_decoder_is_refused_before_anything_is_written(tmp_path):
    pytest.importorskip("onnx")
    x, memory = np.zeros((2, 4, 8), np.float32), np.zeros((2, 3, 8), np.float32)
    with pytest.raises(InteropError, match=r"without its memory: export the block itself with memory="):
        export_onnx(L.TransformerDecoderBlock(8, 2), x, tmp_path / "x.onnx")
    with pytest.raises(InteropError, match="memory was given but Sequential has no layer that reads it"):
        export_onnx(gf.Sequential(L.Linear(8, 8)), x, tmp_path / "x.onnx", memory=memory)
    with pytest.raises(ValueError, match=r"memory has batch size 1 but sample 2"):
        export_onnx(L.TransformerDecoderBlock(8, 2), x, tmp_path / "x.onnx", memory=memory[:1])
    with pytest.raises(ValueError, match=r"memory must be a floating array \(N, S, features\), got float32 of shape \(2, 3\)"):
        export_onnx(L.TransformerDecoderBlock(8, 2), x, tmp_path / "x.onnx", memory=memory[:, :, 0])
    assert not (tmp_path / "x.onnx").exists()


def test_dlpack_shares_memory_with_torch_both_ways():
    torch = pytest.importorskip("torch")
    tensor = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    array = gf.from_dlpack(tensor)
    assert gf.device("cpu").owns(array) and array.shape == (2, 3)
    tensor[0, 0] = 42.0  # no copy: the change shows through
    assert array[0, 0] == 42.0
    y = gf.layers.Linear(3, 2).predict(array)
    back = torch.from_dlpack(y)
    y[0, 0] = -7.0
    assert back[0, 0].item() == -7.0
    with pytest.raises(TypeError, match="expected an object with __dlpack__"):
        gf.from_dlpack([1, 2, 3])
