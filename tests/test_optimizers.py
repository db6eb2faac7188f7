"""LazyAdam and SparseSGD (tfx_recsys/models/training.py): the same weights
as Keras' optimizers where they must be, row-local updates where they may."""

import numpy as np
import pytest
import tensorflow as tf

from tfx_recsys.models import training


def _train(optimizer, rows=50, steps=5, seed=0):
    """Embedding table [rows, 4] and a dense kernel [4, 1] after `steps`
    batches that touch a few rows each (duplicates included)."""
    table = tf.Variable(tf.random.stateless_normal([rows, 4], [seed, 1]))
    kernel = tf.Variable(tf.random.stateless_normal([4, 1], [seed, 2]))
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        ids = tf.constant(rng.integers(0, rows, 6))
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(tf.nn.embedding_lookup(table, ids) @ kernel - 1.0))
        grads = tape.gradient(loss, [table, kernel])
        assert isinstance(grads[0], tf.IndexedSlices)
        optimizer.apply_gradients(zip(grads, [table, kernel]))
    return table.numpy(), kernel.numpy()


def test_lazy_adam_is_keras_adam_below_its_row_threshold():
    lazy = _train(training.LazyAdam(0.05, lazy_min_rows=51))
    keras = _train(tf.keras.optimizers.Adam(0.05))
    for a, b in zip(lazy, keras):
        np.testing.assert_array_equal(a, b)


def test_lazy_adam_moves_only_the_rows_in_the_batch():
    table = tf.Variable(tf.ones([10, 2]))
    optimizer = training.LazyAdam(0.1, lazy_min_rows=10)
    ids = tf.constant([3, 3, 7])
    for _ in range(2):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.nn.embedding_lookup(table, ids))
        optimizer.apply_gradients(zip(tape.gradient(loss, [table]), [table]))
    values = table.numpy()
    untouched = np.delete(values, [3, 7], axis=0)
    np.testing.assert_array_equal(untouched, np.ones_like(untouched))
    # A constant gradient: Adam moves each step by about the learning rate.
    np.testing.assert_allclose(values[[3, 7]], 1.0 - 2 * 0.1, atol=1e-4)


def test_lazy_adam_learns_like_adam_on_a_large_table():
    lazy = _train(training.LazyAdam(0.05, lazy_min_rows=10), steps=30)
    keras = _train(tf.keras.optimizers.Adam(0.05), steps=30)
    start = _train(tf.keras.optimizers.SGD(0.0), steps=1)
    # Both reduce the error by a similar amount; they are not equal.
    def error(weights):
        table, kernel = weights
        return float(np.mean(np.square(table @ kernel - 1.0)))
    assert error(lazy) < 0.9 * error(start)
    assert error(lazy) == pytest.approx(error(keras), rel=0.5)


def test_sparse_sgd_gives_keras_sgd_weights():
    sparse = _train(training.SparseSGD(0.05))
    keras = _train(tf.keras.optimizers.SGD(0.05))
    for a, b in zip(sparse, keras):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_optimizer_names():
    assert isinstance(training.optimizer("adam", 0.01), training.LazyAdam)
    assert isinstance(training.optimizer("adagrad", 0.01), tf.keras.optimizers.Adagrad)
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        training.optimizer("rmsprop", 0.01)
