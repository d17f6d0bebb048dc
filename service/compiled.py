"""A faster answer for small batches of a HistGradientBoosting model, equal to scikit-learn's.

``HistGradientBoosting*.predict`` walks its trees one Python call per tree, behind the pipeline's
own steps (and, for a model with categorical columns, a DataFrame, a ``ColumnTransformer`` and two
``OrdinalEncoder`` passes): milliseconds per call however few rows it gets, which is what a served
request waits for. ``flatten`` turns the fitted model into arrays that answer the service's encoded
matrix (``service.validation``: schema order, categories as codes, ``UNSEEN`` = -1, NaN missing)
directly, every tree for every row at once, one tree level per numpy step.

The shapes it knows (anything else is answered by the model itself):

- ``Pipeline(SimpleImputer, HistGradientBoosting*)`` of numeric columns (the built-in pipeline of an
  all-numeric schema, fitted on a DataFrame or, before schemas, on a bare array);
- ``Pipeline(ColumnTransformer([OrdinalEncoder over categorical columns, "passthrough" numeric
  ones]), HistGradientBoosting*(categorical_features=...))``, the built-in pipeline of a mixed
  schema: the encoder's categories must be the schema's, in order, with unknown and missing values
  encoded NaN;
- a bare ``HistGradientBoosting*`` fitted on numeric columns.

How the arrays reproduce scikit-learn (``ensemble/_hist_gradient_boosting/_predictor.pyx``,
``_predict_one_from_raw_data``):

- input columns are gathered in the order the trees index them: the pipeline's first step's output
  order, then the estimator's own preprocessor's (it puts its categorical features first and maps
  each outer code to its own category index); the imputer's statistics replace NaN;
- a numeric split sends a row left when ``x <= threshold``; NaN goes where ``missing_go_to_left``
  says. Here NaN becomes +inf in one copy of the input and -inf in another, and a node whose missing
  values go left reads the -inf copy, so one comparison per level decides every node (a threshold
  of +inf, scikit-learn's "split on NaN", is lowered to the largest float: finite values still go
  left, NaN right);
- a categorical split sends a category left when its bit is set in the node's
  ``raw_left_cat_bitsets`` row, right when it is a known category of the feature, and where missing
  values go otherwise: a missing value, an unseen category, and a category the encoder knows but
  the trees never saw. Every categorical node's decision for each schema code is tabled at load
  time; per request the table gives one 0/1 column per categorical node, compared with 0.5 like a
  numeric split;
- a leaf points to itself, so finished rows stay put; the trees are walked deepest first, each only
  as many levels as it is deep; leaf values are added to the baseline tree by tree in
  scikit-learn's order (``cumsum`` along the trees is sequential), one sum per class for
  a multiclass model (one tree per class per iteration);
- the raw scores are finished by the estimator's own loss: the inverse link for a regressor,
  ``predict_proba`` (sigmoid for binary, softmax for multiclass) for a classifier, whose predicted
  class is ``raw > 0`` (binary) or the argmax, as ``predict`` does; classes are mapped to the
  schema's order (``schema.align_proba``).

It is only used when it agrees with the model itself (``ModelPredictor``) on the version's
reference rows, on them with missing values, with unseen categories, and with every category of
every categorical column, when the worker loads the model: predicted classes exactly, values and
probabilities within ``RTOL``/``ATOL``. Any other model, or any disagreement, keeps the model's own
answers. Large batches use scikit-learn too (past ``SMALL_BATCH_ROWS``, or ``MIXED_BATCH_ROWS``
behind a ColumnTransformer): there its per-call cost is spread over many rows, and the numpy walk
over trees x rows is slower.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from selfheal_daemon.model.schema import UNSEEN, Schema
from service.predictor import Answer, ModelPredictor, Predictor

SMALL_BATCH_ROWS = 32  # at most this many rows go through the flattened trees (measured: 3x
# faster than predict at 16 rows, even at 64, slower beyond)
MIXED_BATCH_ROWS = 64  # the same behind a ColumnTransformer, whose own cost per call is ~4 ms
# (measured on Adult, 300 trees of depth 21: 100x faster at 1 row, 15x at 16, even near 128)
INLINE_ROWS = 8  # batches up to this size are answered on the worker's event loop, no thread hop
# (measured: 120-140 us for one row, 270-460 us for 8, California and Adult; the hop to the
# prediction thread and back cost more than one row's answer: one row at c=1 +34% throughput)
RTOL = 1e-9  # how closely the fast path's values and probabilities must match the model's
ATOL = 1e-12
_ESTIMATORS = ("HistGradientBoostingRegressor", "HistGradientBoostingClassifier")
_LARGEST = np.finfo(np.float64).max


@dataclass(frozen=True)
class FlatTrees:
    """Every tree of the ensemble in one node table; ``roots`` holds each tree's first node,
    deepest tree first, and ``unsort`` puts the trees back in scikit-learn's order, in which tree
    t belongs to class ``t % per_iteration`` (one tree per class per iteration)."""

    src: np.ndarray | None  # schema column each tree feature reads (None: the same order)
    impute: np.ndarray | None  # per tree feature, the value that replaces NaN (an imputer)
    unseen_to_nan: np.ndarray  # tree features reading a categorical column: UNSEEN -> NaN
    nan_sides: bool  # NaN may reach a numeric split: the input is doubled (+inf, -inf copies)
    cat_feature: np.ndarray  # per categorical node, the tree feature it splits on
    cat_width: np.ndarray  # per categorical node, how many schema codes that feature has
    cat_index: np.ndarray  # per categorical node, where its row starts in cat_table
    cat_table: np.ndarray  # 0.0 (left) or 1.0 (right) per node and code; the last: missing
    width: int  # codes per table row, the last one for missing and unseen
    feature: np.ndarray
    threshold: np.ndarray
    children: np.ndarray  # node i's right child at 2i, its left child at 2i + 1
    value: np.ndarray
    roots: np.ndarray  # the trees' first nodes, deepest tree first
    active: np.ndarray  # per level, how many trees (of the deepest first) are still walking
    unsort: np.ndarray  # tree positions in scikit-learn's order (iteration, then class)
    baseline: np.ndarray  # (per_iteration,)
    per_iteration: int
    finish: Callable[[np.ndarray], Answer]  # raw scores (rows, per_iteration) -> the answer
    small_batch_rows: int  # batches up to this size are faster here than in the model

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The raw scores ``(rows, per_iteration)``, summed exactly as scikit-learn sums them."""
        data = self._inputs(x)
        n = data.shape[0]
        node = np.repeat(self.roots[:, None], n, axis=1)  # (trees, rows)
        rows = np.arange(n)[None, :]
        for walking in self.active.tolist():  # a tree is done once its deepest leaf is reached
            at = node[:walking]
            go_left = data[rows, self.feature[at]] <= self.threshold[at]
            node[:walking] = self.children[2 * at + go_left]
        leaves = self.value[node[self.unsort]]
        k = self.per_iteration
        if k == 1:
            stacked = np.vstack([np.full((1, n), self.baseline[0]), leaves])
            return np.asarray(np.cumsum(stacked, axis=0)[-1])[:, None]
        per_class = leaves.reshape(-1, k, n)
        start = np.broadcast_to(self.baseline[None, :, None], (1, k, n))
        summed = np.cumsum(np.concatenate([start, per_class]), axis=0)[-1]
        return np.ascontiguousarray(summed.T)

    def answer(self, x: np.ndarray) -> Answer:
        return self.finish(self.raw(np.asarray(x, dtype=np.float64)))

    def _inputs(self, x: np.ndarray) -> np.ndarray:
        """The columns the nodes compare: the input in tree order (NaN imputed, or doubled into
        a +inf and a -inf copy), then one 0/1 decision per categorical node."""
        data = x if self.src is None else x[:, self.src]
        if self.impute is not None:
            data = np.where(np.isnan(data), self.impute, data)
        if self.unseen_to_nan.size:
            data = data.copy() if data is x else data
            picked = data[:, self.unseen_to_nan]
            data[:, self.unseen_to_nan] = np.where(picked < 0, np.nan, picked)
        parts = [data]
        if self.nan_sides:
            missing = np.isnan(data)
            parts = [np.where(missing, np.inf, data), np.where(missing, -np.inf, data)]
        if self.cat_feature.size:
            codes = data[:, self.cat_feature]
            known = (codes >= 0) & (codes < self.cat_width)  # NaN compares False: missing
            slot = np.where(known, codes, self.width - 1).astype(np.intp)
            parts.append(self.cat_table[self.cat_index + slot])
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


class FastPredictor:
    """Answers small batches with the flattened trees and the rest with the model itself."""

    def __init__(self, flat: FlatTrees, model: ModelPredictor) -> None:
        self.flat = flat
        self.model = model
        self.inline_rows = min(flat.small_batch_rows, INLINE_ROWS)

    def answer(self, x: np.ndarray) -> Answer:
        if x.shape[0] <= self.flat.small_batch_rows:
            return self.flat.answer(x)
        return self.model.answer(x)


# ----- reading the fitted model ------------------------------------------------------------------


@dataclass(frozen=True)
class _Input:
    """One column the estimator is given: the schema column it comes from, whether that column
    is categorical (then it holds the schema code, unseen and missing as NaN), and the value an
    imputer puts in place of NaN (NaN: none)."""

    column: int
    categorical: bool
    impute: float = float("nan")


def flatten(model: Any, schema: Schema) -> FlatTrees | None:
    """The model's trees as arrays, or None when it is not a shape this evaluator knows."""
    steps = getattr(model, "steps", None)
    if steps is None:
        front, gbm = None, model
    elif len(steps) == 2:
        front, gbm = steps[0][1], steps[1][1]
    else:
        return None
    if type(gbm).__name__ not in _ESTIMATORS or not hasattr(gbm, "_predictors"):
        return None
    inputs = _front_inputs(front, gbm, schema)
    if inputs is None:
        return None
    tree_inputs = _estimator_inputs(gbm, inputs)
    if tree_inputs is None:
        return None
    order, luts = tree_inputs  # tree feature -> estimator input; its category maps
    columns = [inputs[j] for j in order]
    mixed = front is not None and type(front).__name__ == "ColumnTransformer"
    limit = MIXED_BATCH_ROWS if mixed else SMALL_BATCH_ROWS
    return _build(model, gbm, schema, columns, luts, small_batch_rows=limit)


def _front_inputs(front: Any, gbm: Any, schema: Schema) -> list[_Input] | None:
    """What the estimator is given, column by column, by the pipeline's first step."""
    if front is None or type(front).__name__ == "SimpleImputer":
        return _numeric_inputs(front, gbm, schema)
    if type(front).__name__ != "ColumnTransformer" or getattr(front, "sparse_output_", False):
        return None
    out: list[_Input] = []
    for _name, transformer, spec in front.transformers_:
        positions = _spec_positions(spec, schema)
        if positions is None:
            return None
        if isinstance(transformer, str) and transformer == "drop":
            continue
        if _passes_through(transformer):
            if any(not schema.columns[p].is_numeric for p in positions):
                return None
            out.extend(_Input(p, False) for p in positions)
        elif _schema_encoder(transformer, [schema.columns[p] for p in positions]):
            out.extend(_Input(p, True) for p in positions)
        else:
            return None
    return out


def _numeric_inputs(imputer: Any, gbm: Any, schema: Schema) -> list[_Input] | None:
    """The columns of a bare estimator, or of one behind a ``SimpleImputer`` (with the value
    that replaces NaN in each): numeric columns only."""
    positions = _named_positions(gbm if imputer is None else imputer, schema)
    if positions is None or any(not schema.columns[p].is_numeric for p in positions):
        return None
    if imputer is None:
        return [_Input(p, False) for p in positions]
    statistics = np.asarray(getattr(imputer, "statistics_", None), dtype=np.float64)
    missing = imputer.missing_values
    if (
        getattr(imputer, "add_indicator", True)
        or not (isinstance(missing, float) and np.isnan(missing))
        or statistics.shape != (len(positions),)
        or not np.all(np.isfinite(statistics))
    ):
        return None
    return [_Input(p, False, float(s)) for p, s in zip(positions, statistics, strict=True)]


def _passes_through(transformer: Any) -> bool:
    """``"passthrough"``, or the identity ``FunctionTransformer`` a fitted ColumnTransformer
    stores in its place."""
    if isinstance(transformer, str):
        return transformer == "passthrough"
    return type(transformer).__name__ == "FunctionTransformer" and transformer.func is None


def _named_positions(step: Any, schema: Schema) -> list[int] | None:
    """The schema columns a step fitted on a DataFrame reads (by name), or on a bare array (in
    schema order, when it has as many columns)."""
    names = getattr(step, "feature_names_in_", None)
    if names is None:
        if getattr(step, "n_features_in_", None) != len(schema.columns):
            return None
        return list(range(len(schema.columns)))
    features = {name: j for j, name in enumerate(schema.features)}
    positions = [features.get(str(name)) for name in names]
    if any(p is None for p in positions):
        return None
    return [p for p in positions if p is not None]


def _spec_positions(spec: Any, schema: Schema) -> list[int] | None:
    """A ColumnTransformer's column selection as schema positions (names, indices, a mask)."""
    if isinstance(spec, str | int):
        spec = [spec]
    values = list(spec) if isinstance(spec, Sequence | np.ndarray) else None
    if values is None:
        return None
    if values and all(isinstance(v, bool | np.bool_) for v in values):
        if len(values) != len(schema.columns):
            return None
        return [int(i) for i in np.flatnonzero(values)]
    features = {name: j for j, name in enumerate(schema.features)}
    out = []
    for value in values:
        if isinstance(value, str):
            if value not in features:
                return None
            out.append(features[value])
        elif isinstance(value, int | np.integer) and 0 <= int(value) < len(schema.columns):
            out.append(int(value))
        else:
            return None
    return out


def _schema_encoder(encoder: Any, columns: list[Any]) -> bool:
    """True for an OrdinalEncoder that codes each column as its index into the schema's
    categories, with unknown and missing values NaN: then its output is the service's code."""
    if type(encoder).__name__ != "OrdinalEncoder":
        return False
    unknown, missing = encoder.unknown_value, encoder.encoded_missing_value
    if (
        encoder.handle_unknown != "use_encoded_value"
        or not (isinstance(unknown, float) and np.isnan(unknown))
        or not (isinstance(missing, float) and np.isnan(missing))
        or getattr(encoder, "_infrequent_enabled", False)
        or any(c.is_numeric for c in columns)
        or len(encoder.categories_) != len(columns)
    ):
        return False
    return all(
        [str(v) for v in fitted] == list(col.categories)
        for fitted, col in zip(encoder.categories_, columns, strict=True)
    )


def _estimator_inputs(
    gbm: Any, inputs: list[_Input]
) -> tuple[list[int], dict[int, dict[float, int]]] | None:
    """The estimator input each tree feature reads, and for each categorical tree feature the
    map from the value it is given (a schema code) to the category index its trees use."""
    is_categorical = getattr(gbm, "is_categorical_", None)
    if is_categorical is not None and len(is_categorical) != len(inputs):
        return None
    preprocessor = getattr(gbm, "_preprocessor", None)
    if preprocessor is None:  # no categorical features, or older scikit-learn: values as given
        order = list(range(len(inputs)))
        luts: dict[int, dict[float, int]] = {}
        if is_categorical is not None:
            for f in np.flatnonzero(is_categorical):
                if not inputs[f].categorical:
                    return None
                luts[int(f)] = {float(c): c for c in range(256)}
        return order, luts
    order, luts = [], {}
    for _name, transformer, spec in preprocessor.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        mask = np.zeros(len(inputs), dtype=bool)
        mask[np.asarray(spec)] = True
        picked = [int(j) for j in np.flatnonzero(mask)]
        if type(transformer).__name__ == "OrdinalEncoder":
            for j, categories in zip(picked, transformer.categories_, strict=True):
                if not inputs[j].categorical:
                    return None  # a numeric column as the trees' category: not tabled here
                known = [float(c) for c in categories if not np.isnan(c)]
                luts[len(order)] = {value: index for index, value in enumerate(known)}
                order.append(j)
        else:
            order.extend(picked)
    if sorted(order) != list(range(len(inputs))):
        return None
    return order, luts


def _build(
    model: Any,
    gbm: Any,
    schema: Schema,
    columns: list[_Input],
    luts: dict[int, dict[float, int]],
    *,
    small_batch_rows: int,
) -> FlatTrees | None:
    per_iteration = int(getattr(gbm, "n_trees_per_iteration_", 0))
    predictors = [tree for iteration in gbm._predictors for tree in iteration]
    if per_iteration < 1 or not predictors or len(predictors) % per_iteration:
        return None
    finish = _finisher(model, gbm, schema, per_iteration)
    if finish is None:
        return None
    n_features = len(columns)
    impute = np.array([c.impute for c in columns], dtype=np.float64)
    imputed = bool(np.all(np.isfinite(impute)))
    nan_sides = not imputed
    tables = [tree.nodes for tree in predictors]
    offsets = np.cumsum([0, *(len(t) for t in tables)])
    nodes = np.concatenate(tables)
    own = np.arange(len(nodes), dtype=np.intp)
    shift = np.repeat(offsets[:-1], [len(t) for t in tables])
    leaf = nodes["is_leaf"].astype(bool)
    categorical = nodes["is_categorical"].astype(bool) & ~leaf
    missing_left = nodes["missing_go_to_left"].astype(bool)
    feature = np.where(leaf, 0, nodes["feature_idx"]).astype(np.intp)
    threshold = nodes["num_threshold"].astype(np.float64)
    if nan_sides:
        threshold = np.where(threshold == np.inf, _LARGEST, threshold)
        feature = np.where(~leaf & ~categorical & missing_left, feature + n_features, feature)
    cat_nodes = np.flatnonzero(categorical)
    feature_of_cat = nodes["feature_idx"][cat_nodes].astype(np.intp).tolist()
    widths = [len(schema.columns[c.column].categories) for c in columns]
    width = max([0, *(widths[f] for f in set(feature[cat_nodes].tolist()))]) + 1
    table = np.empty((len(cat_nodes), width), dtype=np.float64)
    if len(cat_nodes):
        known_bitsets, f_idx_map = gbm._bin_mapper.make_known_categories_bitsets()
        tree_of = np.searchsorted(offsets, cat_nodes, side="right") - 1
        for k, (i, t) in enumerate(zip(cat_nodes.tolist(), tree_of.tolist(), strict=True)):
            f = int(feature[i])
            if f not in luts:
                return None
            left_bits = predictors[t].raw_left_cat_bitsets[nodes["bitset_idx"][i]]
            known_bits = known_bitsets[f_idx_map[f]]
            table[k] = _category_decisions(
                widths[f],
                width,
                lut=luts[f],
                left_bits=left_bits,
                known_bits=known_bits,
                missing_left=bool(missing_left[i]),
            )
        offset = n_features * (2 if nan_sides else 1)
        feature[cat_nodes] = offset + np.arange(len(cat_nodes))
        threshold[cat_nodes] = 0.5
    src = np.array([c.column for c in columns], dtype=np.intp)
    depths = np.array([int(t["depth"].max()) for t in tables])
    deepest_first = np.argsort(-depths, kind="stable")
    return FlatTrees(
        src=None if np.array_equal(src, np.arange(len(schema.columns))) else src,
        impute=impute if imputed else None,
        unseen_to_nan=np.array([f for f, c in enumerate(columns) if c.categorical], np.intp),
        nan_sides=nan_sides,
        cat_feature=nodes["feature_idx"][cat_nodes].astype(np.intp),
        cat_width=np.array([widths[f] for f in feature_of_cat], dtype=np.float64),
        cat_index=np.arange(len(cat_nodes), dtype=np.intp) * width,
        cat_table=table.reshape(-1),
        width=width,
        feature=feature,
        threshold=threshold,
        children=np.stack(
            [
                np.where(leaf, own, nodes["right"].astype(np.intp) + shift),
                np.where(leaf, own, nodes["left"].astype(np.intp) + shift),
            ],
            axis=1,
        ).reshape(-1),
        value=nodes["value"].astype(np.float64),
        roots=offsets[:-1].astype(np.intp)[deepest_first],
        active=np.array([int((depths > level).sum()) for level in range(int(depths.max()))]),
        unsort=np.argsort(deepest_first),
        baseline=np.asarray(gbm._baseline_prediction, dtype=np.float64).ravel(),
        per_iteration=per_iteration,
        finish=finish,
        small_batch_rows=small_batch_rows,
    )


def _category_decisions(
    codes: int,
    width: int,
    *,
    lut: dict[float, int],
    left_bits: np.ndarray,
    known_bits: np.ndarray,
    missing_left: bool,
) -> np.ndarray:
    """One categorical node's direction (0.0 left, 1.0 right) for each schema code, as
    ``_predict_one_from_raw_data`` decides it; the last entry is a missing or unseen value."""
    missing = 0.0 if missing_left else 1.0
    out = np.full(width, missing, dtype=np.float64)
    for code in range(codes):
        index = lut.get(float(code))
        if index is None or not 0 <= index < 256:
            continue  # unknown to the trees' own encoder: a missing value
        if _in_bitset(left_bits, index):
            out[code] = 0.0
        elif _in_bitset(known_bits, index):
            out[code] = 1.0
    return out


def _in_bitset(bits: np.ndarray, value: int) -> bool:
    """``in_bitset`` of scikit-learn's ``utils/_bitset.pxd``: 8 uint32 words, 256 bits."""
    return bool((int(bits[value // 32]) >> (value % 32)) & 1)


def _finisher(
    model: Any, gbm: Any, schema: Schema, per_iteration: int
) -> Callable[[np.ndarray], Answer] | None:
    """How raw scores become the model's answer, by its own loss, for the schema's task."""
    loss = gbm._loss
    if type(gbm).__name__ == "HistGradientBoostingRegressor":
        if schema.is_classifier or per_iteration != 1:
            return None
        inverse = loss.link.inverse

        def regression(raw: np.ndarray) -> Answer:
            return Answer(np.asarray(inverse(raw.ravel()), dtype=np.float64), None)

        return regression
    if not schema.is_classifier:
        return None
    index = {label: i for i, label in enumerate(schema.classes)}
    labels = schema.class_labels(model)
    to_schema = np.array([index.get(label, np.nan) for label in labels], dtype=np.float64)
    if (per_iteration == 1) != (len(labels) == 2):
        return None
    align = _aligner(schema, labels)

    def classification(raw: np.ndarray) -> Answer:
        proba = np.asarray(loss.predict_proba(raw), dtype=np.float64)
        # "> 0" for a binary model, as predict decides it (a tie is the first class)
        picked = (raw.ravel() > 0).astype(np.intp) if per_iteration == 1 else raw.argmax(axis=1)
        return Answer(to_schema[picked], align(proba))

    return classification


def _aligner(schema: Schema, labels: list[str]) -> Callable[[np.ndarray], np.ndarray]:
    """``schema.align_proba`` with its column map worked out once: the model's probability
    columns (``classes_`` order) in ``schema.classes`` order, 0 for a class it never learned."""
    if labels == list(schema.classes):
        return lambda proba: proba
    where = {label: k for k, label in enumerate(labels)}
    picks = [where.get(label, len(labels)) for label in schema.classes]  # the last: zeros

    def align(proba: np.ndarray) -> np.ndarray:
        padded = np.concatenate([proba, np.zeros((proba.shape[0], 1))], axis=1)
        return padded[:, picks]

    return align


# ----- choosing the path -----------------------------------------------------------------------


def check_rows(schema: Schema, rows: np.ndarray) -> np.ndarray:
    """The rows the fast path must reproduce: ``rows``, then each with one cell missing (cycling
    through the columns), each with one categorical cell unseen, and every category of every
    categorical column on some row."""
    rows = np.asarray(rows, dtype=np.float64)
    n, width = rows.shape
    if not n:
        return rows
    samples = [rows]
    holed = rows.copy()
    holed[np.arange(n), np.arange(n) % width] = np.nan
    samples.append(holed)
    categorical = np.flatnonzero(schema.categorical_mask)
    if categorical.size:
        unseen = rows.copy()
        unseen[np.arange(n), categorical[np.arange(n) % categorical.size]] = UNSEEN
        samples.append(unseen)
        for j in categorical.tolist():
            codes = np.arange(len(schema.columns[j].categories), dtype=np.float64)
            sweep = rows[np.arange(len(codes)) % n].copy()
            sweep[:, j] = codes
            samples.append(sweep)
    return np.concatenate(samples)


def agree(schema: Schema, fast: Answer, real: Answer) -> bool:
    """Whether two answers to the same rows are the same: classes exactly, values and
    probabilities within RTOL/ATOL."""
    if fast.values.shape != real.values.shape:
        return False
    if schema.is_classifier:
        if not np.array_equal(fast.values, real.values, equal_nan=True):
            return False
        if fast.proba is None or real.proba is None or fast.proba.shape != real.proba.shape:
            return False
        return bool(np.allclose(fast.proba, real.proba, rtol=RTOL, atol=ATOL))
    return bool(np.allclose(fast.values, real.values, rtol=RTOL, atol=ATOL, equal_nan=True))


def accelerate(model: Any, schema: Schema, rows: np.ndarray) -> tuple[Predictor, str]:
    """``FastPredictor`` when its answers agree with the model's own on ``check_rows(rows)``,
    else the model's own (``ModelPredictor``); with a sentence saying which."""
    real = ModelPredictor(model, schema)
    try:
        flat = flatten(model, schema)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
        return real, f"model.predict (flattening failed: {type(exc).__name__})"
    if flat is None:
        return real, "model.predict (not a model shape the fast path knows)"
    sample = check_rows(schema, rows)
    try:  # one call each over all rows: both answer every row on its own
        same = agree(schema, flat.answer(sample), real.answer(sample))
    except Exception as exc:  # foreign model code, or a shape the walk got wrong: not served fast
        return real, f"model.predict (the fast path could not be checked: {type(exc).__name__})"
    if not same:
        return real, "model.predict (the fast path disagreed on the reference rows)"
    return FastPredictor(flat, real), f"flattened trees for up to {flat.small_batch_rows} rows"
