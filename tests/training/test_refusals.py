"""Issue 13: every batch checked, refused steps change nothing, backprops that cannot be right
raise (run twice, weights changed since the forward)."""

from __future__ import annotations

import numpy as np
import pytest

import gradflow as gf
from gradflow import layers as L
from gradflow.data import BatchIterator
from gradflow.losses import NLL, BCEWithLogits, SoftmaxCrossEntropy
from gradflow.optim import SGD, LinearWarmup, ReduceLROnPlateau, StepLR
from gradflow.train import evaluate, fit


def blobs(n=40, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n).astype(np.int64)
    x = (np.eye(3, 4)[y] * 2 + rng.normal(scale=0.7, size=(n, 4))).astype(np.float32)
    return x, y


def snapshot(model):
    state = {k: gf.to_numpy(v).copy() for k, v in model.state_dict().items()}
    state["rng"] = gf.checkpoint.layer_rng_states(model)
    return state


def assert_unchanged(model, before):
    after = snapshot(model)
    assert after["rng"] == before["rng"]
    for key, value in before.items():
        if key != "rng":
            np.testing.assert_array_equal(after[key], value, err_msg=key)


def model_with_state(seed=0):
    return gf.Sequential(L.Linear(4, 8, rng=seed), L.BatchNorm1d(8), L.Dropout(0.5, seed=1), L.Linear(8, 3, rng=seed))


# -- labels: every batch, on the host, before anything moves --------------------------------------

@pytest.mark.parametrize("bad", [-1, 3])
def test_fit_refuses_a_bad_label_in_the_last_batch_before_training(bad):
    x, y = blobs()
    y[-1] = bad
    model = model_with_state()
    model(gf.device("cpu").send(x[:8], "float32"), train=True)  # create the dropout generator
    before = snapshot(model)
    with pytest.raises(ValueError, match=rf"fit: data: SoftmaxCrossEntropy: labels must lie in \[0, 2\].*got {bad} at sample 39"):
        fit(model, SoftmaxCrossEntropy(), SGD(model, lr=0.1), (x, y), batch_size=8, shuffle=False, verbose=0)
    assert_unchanged(model, before)


def test_fit_refuses_bad_validation_labels_before_epoch_one_trains():
    x, y = blobs()
    y_val = y.copy()
    y_val[5] = -1
    model = model_with_state()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"fit: validation: SoftmaxCrossEntropy: labels.*got -1 at sample 5"):
        fit(model, SoftmaxCrossEntropy(), SGD(model, lr=0.1), (x, y), validation=(x, y_val), verbose=0)
    assert_unchanged(model, before)


def test_fit_refuses_validation_data_of_the_wrong_shape_before_training():
    x, y = blobs()
    model = model_with_state()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"Linear.*expected input with 4 features"):
        fit(model, SoftmaxCrossEntropy(), SGD(model, lr=0.1), (x, y), validation=(x[:, :3], y), verbose=0)
    assert_unchanged(model, before)


@pytest.mark.parametrize("loss", [None, SoftmaxCrossEntropy(), NLL()])
def test_evaluate_refuses_labels_out_of_range_in_any_batch(loss):
    x, y = blobs()
    y[-1] = -1
    model = model_with_state()
    with pytest.raises(ValueError, match=r"evaluate: data: .*labels must lie in \[0, 2\]"):
        evaluate(model, loss, (x, y), batch_size=8)


def test_ignore_index_labels_pass_the_host_check():
    x, y = blobs()
    y[-1] = -100
    model = model_with_state()
    fit(model, SoftmaxCrossEntropy(ignore_index=-100), SGD(model, lr=0.1), (x, y), batch_size=8, verbose=0)


def test_bce_targets_outside_zero_one_are_refused_in_the_last_batch():
    x, _ = blobs()
    t = np.zeros((40, 3), np.float32)
    t[-1, 2] = 2.0
    model = model_with_state()
    with pytest.raises(ValueError, match=r"fit: data: BCEWithLogits: targets must lie in \[0, 1\]"):
        fit(model, BCEWithLogits(), SGD(model, lr=0.1), (x, t), batch_size=8, verbose=0)


class OwnBatches(BatchIterator):
    """Makes its own batches: fit cannot see the labels on the host and keeps the loss's checks."""

    def __iter__(self):
        for start in range(0, len(self.x), self.batch_size):
            yield self.send(self.x[start:start + self.batch_size]), self.send(self.y[start:start + self.batch_size])


def test_an_iterator_with_its_own_batches_is_checked_by_the_loss_in_every_batch_and_the_step_rolls_back():
    x, y = blobs()
    y[-1] = 3
    model = model_with_state()
    seen = []

    class Spy(gf.callbacks.Callback):
        def on_batch_begin(self, state):
            seen.append(state.batch)
            if state.batch == 4:
                self.before = snapshot(state.model)

    spy = Spy()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        fit(model, SoftmaxCrossEntropy(), SGD(model, lr=0.1), OwnBatches(x, y, 8, shuffle=False),
            callbacks=[spy], verbose=0)
    assert seen == [0, 1, 2, 3, 4]
    assert_unchanged(model, spy.before)  # the refused step moved no statistic, no generator


# -- data that yields nothing, schedules that observe nothing ---------------------------------------

def test_fit_and_evaluate_refuse_data_that_yields_no_batch():
    x, y = blobs(5)
    model = model_with_state()
    empty = BatchIterator(x, y, 8, drop_last=True)
    with pytest.raises(ValueError, match=r"fit: data yields no batch: 5 samples, batch_size 8, drop_last=True"):
        fit(model, SoftmaxCrossEntropy(), SGD(model), empty, verbose=0)
    with pytest.raises(ValueError, match=r"evaluate: data yields no batch"):
        evaluate(model, None, empty)
    with pytest.raises(TypeError, match=r"data must be a BatchIterator or an \(x, y\) pair of host arrays, got list_iterator"):
        fit(model, SoftmaxCrossEntropy(), SGD(model), iter([(x, y)]), verbose=0)


def test_linear_warmup_runs_in_fit_without_validation_data():
    x, y = blobs()
    model = model_with_state()
    optimizer = SGD(model, lr=LinearWarmup(StepLR(0.1, 10), warmup_steps=5))
    history = fit(model, SoftmaxCrossEntropy(), optimizer, (x, y), 3, batch_size=8, verbose=0)
    assert len(history["loss"]) == 3


def test_a_schedule_monitoring_validation_loss_without_validation_data_is_refused_before_training():
    x, y = blobs()
    model = model_with_state()
    before = snapshot(model)
    optimizer = SGD(model, lr=LinearWarmup(ReduceLROnPlateau(0.1), warmup_steps=5))
    with pytest.raises(ValueError, match=r"fit: the optimizer's schedule monitors 'val_loss', which needs validation data"):
        fit(model, SoftmaxCrossEntropy(), optimizer, (x, y), 3, batch_size=8, verbose=0)
    assert_unchanged(model, before)


# -- a forward that raises changes nothing ---------------------------------------------------------

def test_batch_norm_statistics_do_not_move_when_a_later_layer_refuses(device):
    model = gf.Sequential(L.BatchNorm1d(4), L.Linear(5, 3)).to(device)
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"Linear.*5 features"):
        model(device.send(np.random.default_rng(0).normal(size=(6, 4)), "float32"), train=True)
    assert_unchanged(model, before)


def test_a_dropout_generator_does_not_advance_when_a_later_layer_refuses(device):
    model = gf.Sequential(L.Dropout(0.5, seed=3), L.Linear(5, 3, rng=0)).to(device)
    good = device.send(np.ones((2, 5)), "float32")
    model(good, train=True)
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"Linear.*5 features"):
        model(device.send(np.ones((2, 4)), "float32"), train=True)
    assert_unchanged(model, before)
    mask_after_refusal = gf.to_numpy(model(good, train=True)[0])
    twin = gf.Sequential(L.Dropout(0.5, seed=3), L.Linear(5, 3, rng=0)).to(device)
    twin(good, train=True)
    np.testing.assert_array_equal(mask_after_refusal, gf.to_numpy(twin(good, train=True)[0]))


def test_fit_refuses_a_bad_first_batch_without_moving_statistics_or_generators():
    x, y = blobs()
    model = gf.Sequential(L.BatchNorm1d(4), L.Dropout(0.5, seed=1), L.Linear(5, 3))
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"Linear.*5 features"):
        fit(model, SoftmaxCrossEntropy(), SGD(model), (x, y), verbose=0)
    assert_unchanged(model, before)


# -- backprops that cannot be right -----------------------------------------------------------------

def test_a_backprop_called_twice_raises_and_adds_nothing(device):
    model = gf.Sequential(L.Linear(4, 3, rng=0), L.Linear(3, 2, rng=1)).to(device)
    x = device.send(np.ones((2, 4)), "float32")
    y, backprop = model(x, train=True)
    backprop(device.send(np.ones((2, 2)), "float32"))
    grads = [gf.to_numpy(p.grad).copy() for p in model.parameters()]
    with pytest.raises(RuntimeError, match=r"Sequential.*backprop was already called"):
        backprop(device.send(np.ones((2, 2)), "float32"))
    for p, g in zip(model.parameters(), grads):
        np.testing.assert_array_equal(gf.to_numpy(p.grad), g)


def test_a_backprop_after_an_optimizer_changed_the_weights_raises_before_any_gradient(device):
    model = gf.Sequential(L.Linear(4, 3, rng=0), L.Linear(3, 2, rng=1)).to(device)
    x = device.send(np.ones((2, 4)), "float32")
    _, backprop = model(x, train=True)
    model[0].weight.mark_modified()  # what every optimizer step does after its in-place update
    with pytest.raises(RuntimeError, match=r"parameters \['0.weight'\] were changed in place"):
        backprop(device.send(np.ones((2, 2)), "float32"))
    assert all(p.grad is None for p in model.parameters())  # not even the last layer's


def test_load_state_dict_between_forward_and_backprop_is_refused():
    model = L.Linear(4, 3, rng=0)
    _, backprop = model(np.ones((2, 4), np.float32), train=True)
    model.load_state_dict({k: np.zeros_like(v) for k, v in model.state_dict().items()})
    with pytest.raises(RuntimeError, match=r"were changed in place"):
        backprop(np.ones((2, 3), np.float32))


def test_a_refused_delta_can_be_given_again():
    layer = L.Linear(4, 3, rng=0)
    _, backprop = layer(np.ones((2, 4), np.float32), train=True)
    with pytest.raises(ValueError, match="δ of shape"):
        backprop(np.ones((1, 3), np.float32))
    assert backprop(np.ones((2, 3), np.float32)).shape == (2, 4)


# -- class losses on one unbatched sample ------------------------------------------------------------

@pytest.mark.parametrize("loss", [SoftmaxCrossEntropy(), SoftmaxCrossEntropy(label_smoothing=0.1), NLL()])
def test_class_losses_take_one_unbatched_sample(device, loss):
    logits = np.array([0.5, -1.0, 2.0])
    value, delta = loss(device.send(logits, "float64"), device.send(np.array(2), "int64"))
    batched, batched_delta = loss(device.send(logits[None], "float64"), device.send(np.array([2]), "int64"))
    assert float(gf.to_numpy(value)) == pytest.approx(float(gf.to_numpy(batched)))
    np.testing.assert_allclose(gf.to_numpy(delta), gf.to_numpy(batched_delta)[0])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\].*got values in \[3, 3\]"):
        loss(device.send(logits, "float64"), device.send(np.array(3), "int64"))


@pytest.mark.parametrize("dtype", ["int8", "int16", "uint8", "int32", "int64"])
def test_embedding_takes_every_integer_id_dtype_on_every_device(device, dtype):
    layer = L.Embedding(7, 3, rng=0).to(device, "float64")
    ids = np.array([[0, 6, 2], [2, 2, 5]], dtype=dtype)
    y, backprop = layer(device.send(ids), train=True)
    np.testing.assert_array_equal(gf.to_numpy(y), gf.to_numpy(layer.weight.value)[ids.astype(np.int64)])
    backprop(device.send(np.ones((2, 3, 3)), "float64"))
    expected = np.zeros((7, 3))
    np.add.at(expected, ids.reshape(-1).astype(np.int64), 1.0)
    np.testing.assert_array_equal(gf.to_numpy(layer.weight.grad), expected)


def test_the_cli_trains_with_warmup_and_no_validation_split(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn")
    from gradflow import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--warmup", "5", "--validation-split", "0", "--epochs", "2", "--limit", "120",
                     "--verbose", "0"]) == 0
    assert "test loss" in capsys.readouterr().out
