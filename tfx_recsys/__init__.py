"""tfx-recsys: a TFX pipeline that trains, evaluates and ships a recommender."""

__version__ = "0.1.0"
