"""Building blocks of both retrieval models: embedding tables and towers.

A tower maps the transformed features of one side (features.QUERY or
features.CANDIDATE) to a vector: each feature's embedding (a bag's is the mean
of its ids' embeddings), concatenated, through ReLU hidden layers and a linear
output layer, optionally L2-normalised.
"""

from typing import Callable, Collection, Dict, Sequence, Tuple

import tensorflow as tf

from tfx_recsys.models.features import TransformedFeature


class EmbeddingTable(tf.keras.layers.Layer):
    """A table float32 [rows, dim].

    Called on int64 ids [batch] -> [batch, dim]; on a bag, an int64
    SparseTensor [batch, None] -> the mean of its rows [batch, dim] (zeros for
    an empty bag). `encoding`: the TransformedFeature.table whose ids index
    the rows (warm start carries rows over by it).
    """

    def __init__(self, rows: int, dim: int, name: str, encoding: str = ""):
        super().__init__(name=name)
        self.rows, self.dim, self.encoding = rows, dim, encoding
        self.embeddings = self.add_weight(
            name="embeddings", shape=(rows, dim),
            initializer=tf.keras.initializers.RandomUniform(-0.05, 0.05))

    def call(self, ids):
        if isinstance(ids, tf.SparseTensor):
            return tf.nn.safe_embedding_lookup_sparse(self.embeddings, ids,
                                                      combiner="mean")
        return tf.gather(self.embeddings, tf.reshape(ids, [-1]))


def make_tables(features: Sequence[TransformedFeature],
                dim_of: Callable[[TransformedFeature], int],
                shared: Collection[str] = (),
                existing: Dict[str, EmbeddingTable] = None
                ) -> Dict[str, EmbeddingTable]:
    """One table per feature, by feature name.

    Features whose `table` is in `shared` (e.g. "item_id": history and the
    candidate's item id) get one table between them, of the first one's
    dimension. `existing` tables (by table name) are reused instead of created.
    """
    by_table = dict(existing or {})
    tables = {}
    for feature in features:
        key = feature.table if feature.table in shared else f"feature:{feature.name}"
        if key not in by_table:
            by_table[key] = EmbeddingTable(feature.rows, dim_of(feature),
                                           name=f"{feature.name}_embedding",
                                           encoding=feature.table)
        tables[feature.name] = by_table[key]
    return tables


def drop_ids(inputs: Dict[str, tf.Tensor], oov_ids: Dict[str, int], rate: float
             ) -> Dict[str, tf.Tensor]:
    """`inputs` with each id of the features in `oov_ids` replaced by that
    feature's OOV id with probability `rate` (training only): the OOV rows
    then learn a new user's or item's embedding from the examples' other
    features instead of keeping their random start.

    inputs: transformed features, the dropped ones int64 [batch] (or [batch, 1]).
    """
    if not rate or not oov_ids:
        return inputs
    dropped = dict(inputs)
    for name, oov_id in oov_ids.items():
        ids = inputs[name]
        drop = tf.random.uniform(tf.shape(ids)) < rate
        dropped[name] = tf.where(drop, tf.constant(oov_id, ids.dtype), ids)
    return dropped


class Tower(tf.keras.Model):
    """Transformed features of one side -> float32 [batch, output_dim].

    Args:
      features: the side's features (TransformedFeature); each is looked up
        in `tables[feature.name]`.
      tables: EmbeddingTable per feature name (see make_tables).
      hidden_layers: widths of the ReLU layers after the concatenation.
      output_dim: width of the final linear layer.
      normalize: L2-normalise the output (cosine scores; use a temperature).
    """

    def __init__(self, features: Sequence[TransformedFeature],
                 tables: Dict[str, EmbeddingTable], hidden_layers: Sequence[int],
                 output_dim: int, normalize: bool = False, name: str = None):
        super().__init__(name=name)
        self._names = [feature.name for feature in features]
        self.tables = [tables[name] for name in self._names]
        self.hidden = [tf.keras.layers.Dense(units, activation="relu",
                                             name=f"hidden_{i}")
                       for i, units in enumerate(hidden_layers)]
        self.projection = tf.keras.layers.Dense(output_dim, name="output")
        self._normalize = normalize

    @property
    def feature_names(self) -> Tuple[str, ...]:
        """The features the tower reads, in the order of `tables`."""
        return tuple(self._names)

    def call(self, inputs):
        x = tf.concat([table(inputs[name])
                       for name, table in zip(self._names, self.tables)], axis=1)
        for layer in self.hidden:
            x = layer(x)
        x = self.projection(x)
        return tf.math.l2_normalize(x, axis=1) if self._normalize else x
