"""The evaluator's Beam graph: eval users scored on Beam workers.

The eval split is combined per user (earliest row and eval item ids), at
most `max_eval_users` users are drawn by a seeded hash, and they are scored
in batches on Beam workers; the item corpus (whose embeddings every score
needs) is a side input, with ids and diversity features only: the scoring
step reads the item rows it embeds itself. Nothing holds the train split:
the scoring step fits the baselines from two integer arrays, and the served
model's exclusions are gathered for the drawn users only. Per-slice
accumulators are merged with a CombineFn; only the small final metrics come
back to the executor's process, through a file (`score`).

Apart from the executor so that the TFX glue (artifacts, the reference
model, blessing) reads on its own; the metrics themselves are in
evaluation.py.
"""

import array
import hashlib
import itertools
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from tfx.dsl.io import fileio

from tfx_recsys import config, embedding, examples_io, memory
from tfx_recsys.serving import two_stage
from tfx_recsys.components.retrieval_evaluator import evaluation

# What is scored besides the baselines and the reference (the results' keys).
MODEL = "model"          # the retrieval model under evaluation
RANKER = "ranker"        # the ranking model alone, over the whole corpus
TWO_STAGE = "two_stage"  # what is served: retrieval -> ranker -> re-ranking
ITEM_CHUNK = 50_000  # item rows parsed and embedded at a time


class _ReadRows(beam.PTransform):
    """Raw rows ({feature: values}) of one split of an Examples artifact;
    only the features in `fields` when given."""

    def __init__(self, examples_uri: str, split: str, fields: Sequence[str] = ()):
        super().__init__()
        self._pattern = os.path.join(examples_uri, f"Split-{split}", "*")
        self._fields = tuple(fields)

    def expand(self, pipeline):
        records = pipeline | "Read" >> beam.io.ReadFromTFRecord(self._pattern)
        if self._fields:
            return records | "Parse" >> beam.Map(examples_io.parse_fields, self._fields)
        return records | "Parse" >> beam.Map(examples_io.parse_row)


def _item_facts(row: dict, diversity_feature: str) -> dict:
    """What the corpus keeps of an item row: its id and diversity feature."""
    facts = {"item_id": row["item_id"]}
    if diversity_feature in row:
        facts[diversity_feature] = row[diversity_feature]
    return facts


def _train_fields(row: dict) -> Tuple[str, str, int, Optional[float]]:
    """(user id, item id, timestamp, rating or None) of a train example."""
    scalar = examples_io.scalar
    return (scalar(row, "user_id"), scalar(row, "item_id"), scalar(row, "timestamp", 0),
            scalar(row, "rating"))


_TRAIN_FIELDS = ("user_id", "item_id", "timestamp", "rating")


def _read_train(pipeline, examples_uri: str, name: str):
    """The train split as _train_fields tuples."""
    return (pipeline
            | f"Read{name}" >> _ReadRows(examples_uri, config.TRAIN_SPLIT, _TRAIN_FIELDS)
            | f"{name}Fields" >> beam.Map(_train_fields))


def _id_code(value: str) -> int:
    """A 64-bit code of an id: tells ids apart without keeping the strings.
    Two of 10^8 users share one with odds of about 1 in 4,000 (and would
    only pool their items in the baselines); item codes are checked for
    clashes (_corpus_indices)."""
    digest = hashlib.blake2b(value.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def _corpus_indices(item_codes: np.ndarray, corpus) -> np.ndarray:
    """int [n]: the corpus index of each item code (_id_code of an item id)."""
    codes = np.fromiter((_id_code(i) for i in corpus.item_ids), np.int64, len(corpus))
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    if len(sorted_codes) > 1 and (sorted_codes[1:] == sorted_codes[:-1]).any():
        raise ValueError("two item ids of the corpus share a 64-bit code")
    found = np.minimum(np.searchsorted(sorted_codes, item_codes), max(len(codes) - 1, 0))
    if len(item_codes) and (sorted_codes[found] != item_codes).any():
        raise ValueError("a train item is not in the item corpus")
    return order[found]


def _log_memory(step: str) -> None:
    memory.log_memory("RetrievalEvaluator", step)


class _EarliestEval(beam.CombineFn):
    """A user's eval rows -> (earliest row, every eval item id)."""

    def create_accumulator(self):
        return None, []

    def add_input(self, accumulator, row):
        first, item_ids = accumulator
        item_ids.append(examples_io.scalar(row, "item_id"))
        return (row if first is None else evaluation.earliest_row([first, row])), item_ids

    def merge_accumulators(self, accumulators):
        firsts, item_ids = [], []
        for first, ids in accumulators:
            item_ids.extend(ids)
            if first is not None:
                firsts.append(first)
        return (evaluation.earliest_row(firsts) if firsts else None), item_ids

    def extract_output(self, accumulator):
        return accumulator


class _PairArrays(beam.CombineFn):
    """(user code, item code) pairs -> two int64 arrays, 16 bytes a pair."""

    def create_accumulator(self):
        return array.array("q"), array.array("q")

    def add_input(self, accumulator, pair):
        accumulator[0].append(pair[0])
        accumulator[1].append(pair[1])
        return accumulator

    def merge_accumulators(self, accumulators):
        users, items = self.create_accumulator()
        for more_users, more_items in accumulators:
            users.extend(more_users)
            items.extend(more_items)
        return users, items

    def extract_output(self, accumulator):
        return (np.frombuffer(accumulator[0], np.int64),
                np.frombuffer(accumulator[1], np.int64))


class _ScoreUsers(beam.DoFn):
    """Scores batches of eval users for every model and baseline.

    Folds the metrics into accumulators and emits ((model name, slice),
    accumulator) once per slice per batch.
    """

    def __init__(self, model_dirs: Dict[str, str], items_uri: str, ks: List[int],
                 ranking: Optional[Dict[str, Any]] = None):
        self._model_dirs = model_dirs
        self._items_uri = items_uri
        self._ks = ks
        # {"model_dir", "rerank" (RerankConfig), "diversity_feature"} or None.
        self._ranking = ranking

    def setup(self):
        self._models = {name: embedding.load(path)
                        for name, path in self._model_dirs.items()}
        self._ranker = (two_stage.load_ranker(self._ranking["model_dir"])
                        if self._ranking else None)
        self._ready = False

    def _prepare(self, corpus, train_pairs, excluded_rows, first_seen):
        """Once per worker, from the side inputs: the baselines, every
        model's item embeddings and the served recommender. The item rows
        are read here, in corpus order, and dropped once used."""
        memory.release_free_memory()
        _log_memory("preparing")
        self._item_ids = corpus.item_ids
        user_codes, item_codes = train_pairs
        self._baselines = evaluation.fit_baselines_on_indices(
            user_codes, _corpus_indices(item_codes, corpus), corpus)
        memory.release_free_memory()
        _log_memory("baselines fitted")
        self._item_embeddings, kept_rows = self._embed_items(corpus)
        _log_memory("items embedded")
        self._two_stage = None
        if self._ranker is not None:
            embeddings = self._item_embeddings[MODEL]
            rerank = self._ranking["rerank"]
            self._two_stage = two_stage.build_from_item_facts(
                self._models[MODEL], self._ranker,
                two_stage.ExactIndex(self._item_ids, embeddings, 1),
                two_stage.item_facts(kept_rows, first_seen or {}, rerank,
                                     self._ranking["diversity_feature"]),
                embeddings, two_stage.excluded_items(excluded_rows, rerank), rerank,
                max(self._ks))
        del kept_rows
        memory.release_free_memory()
        _log_memory("ready to score")
        self._ready = True

    def _embed_items(self, corpus):
        """Every model's item embeddings float32 [items, dim] in corpus
        order, and the item rows in corpus order with only the features
        re-ranking reads (two_stage.item_facts).

        The items are read and embedded ITEM_CHUNK at a time: a million
        parsed rows at once cost about 1 GB."""
        kept = (two_stage.item_fact_fields(self._ranking["rerank"],
                                           self._ranking["diversity_feature"])
                if self._ranking else ["item_id"])
        embeddings = {name: None for name in self._models}
        kept_rows: List[Optional[dict]] = [None] * len(corpus)
        rows = examples_io.read_rows(self._items_uri, config.ITEMS_SPLIT)
        while True:
            chunk = list(itertools.islice(rows, ITEM_CHUNK))
            if not chunk:
                break
            at = np.array([corpus.index[examples_io.scalar(r, "item_id")] for r in chunk])
            for name, model in self._models.items():
                block = embedding.embed_items(model, chunk)
                if embeddings[name] is None:
                    embeddings[name] = np.zeros((len(corpus), block.shape[1]), np.float32)
                embeddings[name][at] = block
            for i, row in zip(at, chunk):
                kept_rows[i] = {f: row[f] for f in kept if f in row}
        return embeddings, kept_rows

    def process(self, cases, corpus, train_pairs, excluded_rows=None, first_seen=None):
        if not self._ready:  # side inputs arrive with elements
            self._prepare(corpus, train_pairs, excluded_rows, first_seen)
        chunk = evaluation.batch_size_for(len(corpus))
        for start in range(0, len(cases), chunk):
            batch = cases[start:start + chunk]
            # One [users, items] block at a time: at a million items each is
            # 128 MB, and there is one per model and baseline.
            for name, block in self._score_blocks(batch, corpus):
                for slice_name, accumulator in evaluation.accumulate(
                        batch, block, corpus, self._ks,
                        sampled=name != TWO_STAGE).items():
                    yield (name, slice_name), accumulator
                del block
            if self._ranker is not None and not evaluation.ranker_full_corpus(len(corpus)):
                yield from self._ranker_sampled(batch)
            # Scoring 10,000 users at a million items grew the process by
            # 1 GB; hand back what each batch freed.
            memory.return_free_heap()

    def _score_blocks(self, batch, corpus):
        """Yields (name, float32 scores [users, items]) per model and baseline."""
        rows = [c.user_row for c in batch]
        for name, baseline in self._baselines.items():
            yield name, evaluation.baseline_scores(baseline, batch, corpus)
        for name, model in self._models.items():
            yield name, embedding.embed_users(model, rows) @ self._item_embeddings[name].T
        if self._ranker is not None:
            if evaluation.ranker_full_corpus(len(corpus)):
                yield RANKER, two_stage.ranker_scores(
                    self._ranker, [examples_io.scalar(r, "user_id") for r in rows],
                    self._item_ids)
            yield TWO_STAGE, evaluation.list_scores(
                two_stage.recommend_rows(self._two_stage, rows), corpus)

    def _ranker_sampled(self, batch):
        """The ranker on each user's sampled-protocol items only."""
        cases = [c for c in batch if c.sampled is not None]
        lists = [[self._item_ids[i] for i in c.sampled] for c in cases]
        values = two_stage.ranker_list_scores(
            self._ranker, [examples_io.scalar(c.user_row, "user_id") for c in cases], lists)
        for slice_name, accumulator in evaluation.accumulate_sampled(cases, values).items():
            yield (RANKER, slice_name), accumulator


class _MergeAccumulators(beam.CombineFn):
    def create_accumulator(self):
        return None

    def add_input(self, merged, accumulator):
        return accumulator if merged is None else merged.merge(accumulator)

    def merge_accumulators(self, accumulators):
        merged = None
        for accumulator in accumulators:
            if accumulator is not None:
                merged = accumulator if merged is None else merged.merge(accumulator)
        return merged

    def extract_output(self, merged):
        return merged


def _write_json(value, path: str) -> None:
    with fileio.open(path, "w") as f:
        json.dump(value, f)


def _write_partial_results(results, path: str) -> None:
    with fileio.open(path, "w") as f:
        json.dump([[list(key), value] for key, value in results], f)


def score(pipeline, examples_uri: str, items_uri: str,
          model_dirs: Dict[str, str], ks: List[int], ranking: Optional[Dict],
          diversity_feature: str, max_eval_users: int, partial_path: str,
          count_path: str):
    """The Beam graph: writes every (model, slice)'s metrics to
    partial_path and the number of eval users to count_path."""
    # Only steps without side inputs consume `train`, so Beam fuses them
    # with the read and never holds the split; the drawn users' rows come
    # from a second read (their filter needs a side input).
    train = _read_train(pipeline, examples_uri, "Train")
    counts = (train | "TrainItems" >> beam.Map(lambda t: t[1])
              | "CountItems" >> beam.combiners.Count.PerElement())
    corpus = beam.pvalue.AsSingleton(
        pipeline
        | "ReadItems" >> _ReadRows(items_uri, config.ITEMS_SPLIT)
        | "ItemFacts" >> beam.Map(_item_facts, diversity_feature)
        | "ItemList" >> beam.combiners.ToList()
        | "Corpus" >> beam.Map(evaluation.build_corpus, beam.pvalue.AsDict(counts),
                               diversity_feature))
    eval_users = (pipeline
                  | "ReadEval" >> _ReadRows(examples_uri, config.EVAL_SPLIT)
                  | "KeyEval" >> beam.Map(lambda r: (examples_io.scalar(r, "user_id"), r))
                  | "EarliestEval" >> beam.CombinePerKey(_EarliestEval()))
    _ = (eval_users
         | "CountEvalUsers" >> beam.combiners.Count.Globally()
         | "WriteCount" >> beam.Map(_write_json, count_path))
    drawn = _select_users(eval_users, max_eval_users)
    drawn_ids = beam.pvalue.AsDict(drawn | "DrawnIds" >> beam.Map(lambda kv: (kv[0], 1)))
    drawn_train = (_read_train(pipeline, examples_uri, "TrainAgain")
                   | "DrawnTrain" >> beam.Filter(lambda t, ids: t[0] in ids,
                                                 drawn_ids))
    cases = ({"train": drawn_train | "KeyTrain" >> beam.Map(lambda t: (t[0], t[1])),
              "eval": drawn}
             | "ByUser" >> beam.CoGroupByKey()
             | "Cases" >> beam.FlatMap(
                 lambda kv, corpus: [evaluation.user_case(
                     kv[1]["train"], first, item_ids, corpus)
                     for first, item_ids in list(kv[1]["eval"])[:1]],
                 corpus))
    # Two int arrays (user and item codes) travel to the scoring step,
    # which fits the baselines itself: a fitted item-kNN at a million
    # items is ~1e8 similarities.
    train_pairs = (
        train
        | "TrainCodes" >> beam.Map(lambda t: (_id_code(t[0]), _id_code(t[1])))
        | "PairArrays" >> beam.CombineGlobally(_PairArrays()))
    side_inputs = [corpus, beam.pvalue.AsSingleton(train_pairs)]
    if ranking:
        # What the served model's exclusions come from: the drawn users'
        # train rows; and its freshness, when that is an item's first
        # appearance: every item's first train timestamp.
        side_inputs.append(beam.pvalue.AsList(drawn_train | "ExclusionRows" >> beam.Map(
            lambda t: (t[0], t[1], t[3]))))
        rerank = ranking["rerank"]
        if rerank.freshness_weight and not rerank.freshness_feature:
            side_inputs.append(beam.pvalue.AsDict(
                train
                | "ItemTimes" >> beam.Map(lambda t: (t[1], t[2]))
                | "FirstSeen" >> beam.CombinePerKey(min)))
    return (cases
            | "Batch" >> beam.BatchElements(min_batch_size=64, max_batch_size=512)
            | "Score" >> beam.ParDo(_ScoreUsers(model_dirs, items_uri, ks, ranking),
                                    *side_inputs)
            | "Merge" >> beam.CombinePerKey(_MergeAccumulators())
            | "Finish" >> beam.Map(lambda kv, corpus: (kv[0], kv[1].result(len(corpus))),
                                   corpus)
            | "Collect" >> beam.combiners.ToList()
            | "Write" >> beam.Map(_write_partial_results, partial_path))


def _select_users(eval_users, max_eval_users: int):
    """At most max_eval_users of the (user id, ...) elements, the smallest
    by evaluation.sample_key; all when max_eval_users is 0."""
    if not max_eval_users:
        return eval_users
    return (eval_users
            | "SampleUsers" >> beam.combiners.Top.Smallest(
                max_eval_users, key=lambda kv: (evaluation.sample_key(kv[0]), kv[0]))
            | "Drawn" >> beam.FlatMap(lambda drawn: drawn))
