"""Neural Collaborative Filtering (He et al., WWW 2017) on integer ids.

A ranker of implicit feedback: given a user id u and an item id i (int64
[batch] each), a logit z [batch] of "u interacted with i"; the model outputs
sigmoid(z). Four variants (NcfConfig.variant), with B the batch size,
F = factors, L = mlp_layers:

  mf     the baseline, a biased dot product:
           z = <p_u, q_i> + b_u + b_i + b          p_u, q_i: [B, F]
  gmf    generalised matrix factorisation: a learned weighting of the
         element-wise product
           g = p_u * q_i                          [B, F]
           z = g @ w_gmf + b_gmf                  w_gmf: [F, 1]
  mlp    the concatenated embeddings through ReLU layers
           h_0 = [p'_u, q'_i]                     [B, L[0]] (each L[0] / 2)
           h_k = relu(h_{k-1} @ W_k + c_k)        [B, L[k]], k = 1 .. len(L)-1
           z = h_last @ w_mlp + b_mlp             w_mlp: [L[-1], 1]
  neumf  GMF and MLP side by side, each with its OWN embeddings, their last
         vectors concatenated into one output layer
           z = [g, h_last] @ w + b                w: [F + L[-1], 1]

Pretraining (NeuMF, config.pretrain): GMF and MLP are first trained alone;
NeuMF starts from their embeddings and hidden layers, with the output layer
w = [alpha * w_gmf; (1 - alpha) * w_mlp], b = alpha * b_gmf + (1 - alpha) *
b_mlp, so that its initial logit is exactly alpha * z_gmf + (1 - alpha) *
z_mlp; it is then fine-tuned with plain SGD (the paper: Adam keeps no
momentum state from pretraining, so it would disturb the pretrained weights).

Training is binary cross-entropy on the positives plus `negatives` items per
positive sampled uniformly among the user's unobserved items, resampled every
epoch (models/negatives.py). Layers have stable names (gmf_user_embedding,
mlp_hidden_0, neumf_output, ...), shared between variants, so weights can be
copied by name.
"""

import dataclasses
import gc
import time
from typing import Callable, Dict, Optional

import numpy as np
import tensorflow as tf

from tfx_recsys.config import NCF_VARIANTS, NcfConfig
from tfx_recsys.models import negatives, training

# Examples scored per call by score().
SCORE_BATCH = 65536

# Train steps per call into the compiled train function: the models are so
# small that Keras' per-step Python overhead would dominate an epoch.
_STEPS_PER_EXECUTION = 32


class NcfModel(tf.keras.Model):
    """One NCF variant: {"user": int64 [B], "item": int64 [B]} -> float32 [B].

    call() returns probabilities sigmoid(z); logits() returns z (what a
    blended score should use). Trained with fit() below: train_step applies
    the numerically stable cross-entropy on the logits plus any L2 penalty.
    """

    def __init__(self, config: NcfConfig, num_users: int, num_items: int):
        super().__init__(name=f"ncf_{config.variant}")
        _check_config(config)
        self.variant = config.variant
        self.num_users, self.num_items = num_users, num_items
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")

        def embedding(rows: int, dim: int, name: str) -> tf.keras.layers.Embedding:
            return tf.keras.layers.Embedding(
                rows, dim, name=name,
                # The paper's initialisation.
                embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=0.01),
                # As in the paper's code: a penalty on the whole table.
                embeddings_regularizer=(tf.keras.regularizers.l2(config.l2)
                                        if config.l2 > 0 else None))

        if self.variant == "mf":
            self.mf_user = embedding(num_users, config.factors, "mf_user_embedding")
            self.mf_item = embedding(num_items, config.factors, "mf_item_embedding")
            self.mf_user_bias = tf.keras.layers.Embedding(
                num_users, 1, embeddings_initializer="zeros", name="mf_user_bias")
            self.mf_item_bias = tf.keras.layers.Embedding(
                num_items, 1, embeddings_initializer="zeros", name="mf_item_bias")
            self.mf_global_bias = _Bias(name="mf_global_bias")
        if self.variant in ("gmf", "neumf"):
            self.gmf_user = embedding(num_users, config.factors, "gmf_user_embedding")
            self.gmf_item = embedding(num_items, config.factors, "gmf_item_embedding")
        if self.variant in ("mlp", "neumf"):
            half = config.mlp_layers[0] // 2
            self.mlp_user = embedding(num_users, half, "mlp_user_embedding")
            self.mlp_item = embedding(num_items, half, "mlp_item_embedding")
            self.mlp_hidden = [
                tf.keras.layers.Dense(units, activation="relu", name=f"mlp_hidden_{k}")
                for k, units in enumerate(config.mlp_layers[1:])]
        # The output layer: one logit from the variant's last vector.
        if self.variant in ("gmf", "mlp", "neumf"):
            self.output_layer = tf.keras.layers.Dense(1, name=f"{self.variant}_output")

    def gmf_vector(self, users: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        """p_u * q_i: float32 [B, factors]."""
        return self.gmf_user(users) * self.gmf_item(items)

    def mlp_vector(self, users: tf.Tensor, items: tf.Tensor,
                   training: bool = False) -> tf.Tensor:
        """The last MLP layer h_last: float32 [B, mlp_layers[-1]]."""
        h = tf.concat([self.mlp_user(users), self.mlp_item(items)], axis=-1)
        for layer in self.mlp_hidden:
            h = layer(h, training=training)
        return h

    def logits(self, inputs: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """z: float32 [B] for int ids inputs["user"], inputs["item"] ([B] or [B, 1])."""
        users = tf.reshape(inputs["user"], [-1])
        items = tf.reshape(inputs["item"], [-1])
        if self.variant == "mf":
            z = (tf.reduce_sum(self.mf_user(users) * self.mf_item(items), axis=-1)
                 + tf.squeeze(self.mf_user_bias(users), -1)
                 + tf.squeeze(self.mf_item_bias(items), -1))
            return self.mf_global_bias(z)
        if self.variant == "gmf":
            last = self.gmf_vector(users, items)
        elif self.variant == "mlp":
            last = self.mlp_vector(users, items, training)
        else:
            last = tf.concat([self.gmf_vector(users, items),
                              self.mlp_vector(users, items, training)], axis=-1)
        return tf.squeeze(self.output_layer(last), -1)

    def call(self, inputs: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Probabilities sigmoid(z): float32 [B]."""
        return tf.sigmoid(self.logits(inputs, training=training))

    def train_step(self, data):
        # Cross-entropy from the logits (sigmoid_cross_entropy_with_logits is
        # exact where log(sigmoid(z)) would underflow), averaged over the batch.
        x, labels, _ = tf.keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
                labels=tf.reshape(tf.cast(labels, tf.float32), [-1]),
                logits=self.logits(x, training=True)))
            if self.losses:  # the L2 penalties of the embedding tables
                loss += tf.add_n(self.losses)
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self):
        # Listed here so that fit() resets the running mean every epoch.
        return [self.loss_tracker]


class _Bias(tf.keras.layers.Layer):
    """Adds one trainable scalar (MF's global bias)."""

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(), initializer="zeros")

    def call(self, x):
        return x + self.bias


def build(config: NcfConfig, num_users: int, num_items: int) -> NcfModel:
    """The config's variant for user ids [0, num_users), item ids [0, num_items).

    Returns a built NcfModel (its weights exist, so they can be copied at
    once): model({"user": int64 [B], "item": int64 [B]}) -> float32 [B]
    probabilities; model.logits(same) -> float32 [B] logits.
    """
    if num_users < 1 or num_items < 1:
        raise ValueError(f"num_users and num_items must be positive, "
                         f"got {num_users} and {num_items}")
    model = NcfModel(config, num_users, num_items)
    model({"user": tf.zeros([1], tf.int64), "item": tf.zeros([1], tf.int64)})
    return model


# The layers NeuMF takes from each pretrained model, by name.
_GMF_LAYERS = ("gmf_user_embedding", "gmf_item_embedding")
_MLP_LAYERS = ("mlp_user_embedding", "mlp_item_embedding")


def init_from_pretrained(neumf: NcfModel, gmf: NcfModel, mlp: NcfModel,
                         alpha: float) -> None:
    """Copies pretrained GMF and MLP weights into a built NeuMF, in place.

    Embeddings and hidden layers are copied as they are; the output layer
    becomes kernel [alpha * w_gmf; (1 - alpha) * w_mlp] ([F + L[-1], 1]) and
    bias alpha * b_gmf + (1 - alpha) * b_mlp, so that NeuMF's logit equals
    alpha * gmf.logits + (1 - alpha) * mlp.logits.
    """
    for model, variant in ((neumf, "neumf"), (gmf, "gmf"), (mlp, "mlp")):
        if model.variant != variant:
            raise ValueError(f"expected a {variant} model, got {model.variant}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    names = _GMF_LAYERS + _MLP_LAYERS + tuple(layer.name for layer in mlp.mlp_hidden)
    for name in names:
        source = gmf if name.startswith("gmf_") else mlp
        # set_weights checks that the shapes agree (same factors, mlp_layers).
        neumf.get_layer(name).set_weights(source.get_layer(name).get_weights())
    w_gmf, b_gmf = gmf.output_layer.get_weights()
    w_mlp, b_mlp = mlp.output_layer.get_weights()
    neumf.output_layer.set_weights([
        np.concatenate([alpha * w_gmf, (1.0 - alpha) * w_mlp], axis=0),
        alpha * b_gmf + (1.0 - alpha) * b_mlp])


def fit(config: NcfConfig, users: np.ndarray, items: np.ndarray, num_users: int,
        num_items: int, candidate_items: Optional[np.ndarray] = None,
        log: Callable[[str], None] = print) -> NcfModel:
    """Trains the config's variant on the observed pairs (users[j], items[j]).

    Args:
      config: the hyperparameters.
      users, items: int [n], the positives (ids in [0, num_users) and
        [0, num_items)).
      candidate_items: int [c], the items negatives are drawn from (default:
        all of [0, num_items)); pass the real item ids when the id range has
        OOV or padding rows.
      log: called with one line per epoch (loss, seconds).
    Returns:
      The trained model. Deterministic for config.seed: the seeds are set,
      ops are deterministic, and each epoch's examples come shuffled from
      negatives.training_examples(seed, epoch) and are fed in that order.
      Negatives are fresh every epoch, across stages too: with pretraining,
      GMF uses the epochs 0 .. E-1 of the sampler, MLP E .. 2E-1, NeuMF
      2E .. 3E-1.
    """
    _check_config(config)
    users = np.asarray(users, dtype=np.int64).ravel()
    items = np.asarray(items, dtype=np.int64).ravel()
    if users.size and (users.min() < 0 or users.max() >= num_users):
        raise ValueError(f"user ids must be in [0, {num_users}), "
                         f"got {users.min()}..{users.max()}")
    training.set_seed(config.seed)
    observed = negatives.observed_keys(users, items, num_items)

    def train(model: NcfModel, optimizer: tf.keras.optimizers.Optimizer,
              first_epoch: int) -> NcfModel:
        model.compile(optimizer=optimizer, steps_per_execution=_STEPS_PER_EXECUTION)
        for epoch in range(config.epochs):
            start = time.perf_counter()
            user_ids, item_ids, labels = negatives.training_examples(
                users, items, observed, num_items, config.negatives, config.seed,
                epoch=first_epoch + epoch, candidate_items=candidate_items)
            sampled = time.perf_counter()
            # Arrays straight into fit(): on 2 cores this measured faster
            # than a tf.data from_tensor_slices().batch().prefetch() pipeline
            # built per epoch (0.15-0.3 s against 0.3-0.6 s per GMF epoch on
            # 400k examples). No shuffle: the examples come shuffled, seeded.
            history = model.fit({"user": user_ids, "item": item_ids}, labels,
                                batch_size=config.batch_size, epochs=1,
                                shuffle=False, verbose=0)
            done = time.perf_counter()
            log(f"ncf {model.variant} epoch {epoch + 1}/{config.epochs}: "
                f"loss {history.history['loss'][-1]:.4f}, {done - start:.2f}s "
                f"(sampling {sampled - start:.2f}s, {labels.size} examples)")
        return model

    def optimizer():
        return training.optimizer(config.optimizer, config.learning_rate)

    if config.variant == "neumf" and config.pretrain:
        gmf = train(build(_variant(config, "gmf"), num_users, num_items), optimizer(), 0)
        mlp = train(build(_variant(config, "mlp"), num_users, num_items), optimizer(),
                    config.epochs)
        neumf = build(config, num_users, num_items)
        init_from_pretrained(neumf, gmf, mlp, config.alpha)
        # Their tables and Adam slots are copied into NeuMF or no longer
        # needed: about 1 GB at a million items, freed before NeuMF trains.
        del gmf, mlp
        gc.collect()
        return train(neumf, training.SparseSGD(config.pretrain_learning_rate),
                     2 * config.epochs)
    return train(build(config, num_users, num_items), optimizer(), 0)


def score(model: NcfModel, users: np.ndarray, items: np.ndarray,
          batch_size: int = SCORE_BATCH) -> np.ndarray:
    """Probabilities float32 [n] of the pairs (users[j], items[j]), int [n] each,
    computed batch_size pairs at a time. Any shape works: the result has the
    shape of `users` (e.g. [n, 100] for sampled ranking lists)."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if users.shape != items.shape:
        raise ValueError(f"users and items differ in shape: {users.shape} != {items.shape}")
    flat_users, flat_items = users.ravel(), items.ravel()
    out = np.empty(flat_users.size, dtype=np.float32)
    for start in range(0, flat_users.size, batch_size):
        batch = slice(start, start + batch_size)
        out[batch] = model({"user": flat_users[batch], "item": flat_items[batch]},
                           training=False).numpy()
    return out.reshape(users.shape)


def _variant(config: NcfConfig, variant: str) -> NcfConfig:
    return dataclasses.replace(config, variant=variant)


def _check_config(config: NcfConfig) -> None:
    if config.variant not in NCF_VARIANTS:
        raise ValueError(f"unknown NCF variant {config.variant!r}; "
                         f"use one of {', '.join(NCF_VARIANTS)}")
    if config.factors < 1:
        raise ValueError(f"factors must be positive, got {config.factors}")
    if config.variant in ("mlp", "neumf"):
        layers = tuple(config.mlp_layers)
        if not layers or layers[0] < 2 or layers[0] % 2 or min(layers) < 1:
            raise ValueError(f"mlp_layers must start with an even width >= 2 "
                             f"(the two embeddings' sizes) and be positive, got {layers}")
    if config.negatives < 0 or config.epochs < 0 or config.batch_size < 1:
        raise ValueError("negatives and epochs must be >= 0 and batch_size positive")


# --------------------------------------------------------------------------
# The TFX Trainer entry point


def run_fn(fn_args) -> None:
    """Trains the ranker on Transform's train split and saves it behind the
    raw-id `score` signature (models/ranker_export.py).

    fn_args.custom_config: {"dataset": DatasetConfig.to_dict(), NcfConfig
    fields, "code_fingerprint": ...}. Negatives come from the items with
    train interactions: the vocabulary's OOV row is never a negative.
    """
    from absl import logging
    import tensorflow_transform as tft

    from tfx_recsys.dataset_config import ITEM_ID, USER_ID
    from tfx_recsys.models import features, ranker_export

    hparams = NcfConfig.from_custom_config(fn_args.custom_config)
    if getattr(fn_args, "base_model", None):
        # Warm start is for the retrieval models (warm_start.py); the ranker
        # is small enough to train from scratch every time.
        logging.info("NCF trains from scratch: base model %s ignored", fn_args.base_model)
    dataset = features.dataset_from_custom_config(fn_args.custom_config)
    transform_output = tft.TFTransformOutput(fn_args.transform_output)
    rows = {f.name: f.rows for f in features.transformed_features(dataset, transform_output)}
    users, items, raw_users = ranker_export.read_train_ids(fn_args, transform_output)
    logging.info("NCF %s on %d train interactions (%d user rows, %d item rows): %s",
                 hparams.variant, users.size, rows[USER_ID], rows[ITEM_ID], hparams)
    candidates = np.unique(items)
    users, items = _users_with_negatives(users, items, candidates.size, logging.warning)
    model = fit(hparams, users, items, rows[USER_ID], rows[ITEM_ID],
                candidate_items=candidates, log=logging.info)
    module = ranker_export.RankerExportModule(
        model, lambda m, inputs: m.logits(inputs), fn_args.transform_output,
        raw_users, dataset)
    ranker_export.save(module, fn_args.serving_model_dir, dataset)


def _users_with_negatives(users: np.ndarray, items: np.ndarray, num_candidates: int,
                          warn: Callable[[str], None]):
    """The pairs of users who left some candidate item unobserved: no negative
    can be drawn for a user who interacted with every item, so their pairs
    are left out of training (counted in the log)."""
    pairs = np.unique(np.stack([users, items], axis=1), axis=0)
    distinct = np.bincount(pairs[:, 0], minlength=int(users.max()) + 1)
    saturated = distinct[users] >= num_candidates
    if saturated.any():
        warn(f"NCF: {int(np.sum(distinct >= num_candidates))} users interacted with "
             f"all {num_candidates} items, so no negative exists for them; their "
             f"{int(saturated.sum())} interactions are left out of ranker training")
    return users[~saturated], items[~saturated]
