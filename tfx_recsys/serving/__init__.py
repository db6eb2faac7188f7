"""Serving the pushed model: `recsys serve` (KServe's model server) and its
KServe InferenceService (`recsys deploy`). See docs/serving.md."""
