"""What is served and how: the contract (contract.py), the two-stage model
the pusher ships (two_stage.py, reranking.py), and serving it: `recsys serve`
(KServe's model server) and its KServe InferenceService (`recsys deploy`).
See docs/serving.md and docs/served-model.md."""
