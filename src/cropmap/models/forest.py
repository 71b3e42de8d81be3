"""A random forest as a registered model: ``x [B, C, T, H, W]`` -> log-probabilities ``[B, K, H, W]``.

The classical baseline of ``cropmap train --model rf``. Each pixel's feature vector is its
standardised series flattened band-major (feature ``c·T + t``), the features every random-forest
comparison in the literature (and benchmarks/real_*.py) uses. scikit-learn fits the trees
(:mod:`cropmap.train_forest`); this module holds them as plain tensors, so that a forest sits in a
cropmap checkpoint like any model's weights, loads with ``torch.load(weights_only=True)`` (no pickle,
no scikit-learn at prediction) and is evaluated by torch: predict, evaluate, compare and audit use it
unchanged.

Layout (``n`` trees, each padded to ``nodes`` nodes; leaves of all trees in one table):
  feature [n, nodes] int16 (split feature; 0 at leaves), threshold [n, nodes] float32,
  left [n, nodes] int32 (-1 at a leaf), right [n, nodes] int32 (at a leaf: its row in the leaf table),
  leaf_class [leaves, k] int16, leaf_prob [leaves, k] float32: the ``k`` classes a leaf holds and their
  shares, ``k`` the most any leaf holds (1 for fully grown trees: their leaves are pure).
scikit-learn sends a sample left when ``x <= threshold`` with a float64 threshold and float32 ``x``;
the thresholds are stored as the largest float32 not above the float64 one, which sends every float32
value the same way, so the probabilities equal scikit-learn's ``predict_proba``.

Two traversals give the same leaves: a vectorised one in torch (any device, no scikit-learn), and on the
CPU, when scikit-learn is installed (a cropmap dependency), its compiled ``Tree.apply`` over trees
rebuilt from these arrays (node records made here, never unpickled), on threads: ~20x faster on 2 cores.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import nn

from .registry import register

log = logging.getLogger(__name__)

# pixels per traversal pass: [chunk, trees] int64 node indices stay ~25 MB at 100 trees
CHUNK_PIXELS = 1 << 15
LOG_FLOOR = 1e-9  # log-probability floor: a class no tree votes for gets log(1e-9), not -inf


class RandomForest(nn.Module):
    """Trees as tensors (module docstring); ``steps`` is the T the features were made with."""

    # pixel-wise: the output at a pixel depends on that pixel's series only (see predict.windows)
    receptive_radius = 0
    # a traversal loops until every pixel reaches a leaf: no fixed graph for ONNX
    no_export = "a random forest's tree traversal loops until every pixel reaches a leaf"

    def __init__(self, in_channels: int, num_classes: int, steps: int, trees: int, nodes: int, leaves: int,
                 leaf_classes: int, depth: int) -> None:
        super().__init__()
        self.in_channels, self.num_classes, self.steps, self.depth = in_channels, num_classes, steps, depth
        self.register_buffer("feature", torch.zeros(trees, nodes, dtype=torch.int16))
        self.register_buffer("threshold", torch.zeros(trees, nodes, dtype=torch.float32))
        self.register_buffer("left", torch.full((trees, nodes), -1, dtype=torch.int32))
        self.register_buffer("right", torch.zeros(trees, nodes, dtype=torch.int32))
        self.register_buffer("leaf_class", torch.zeros(leaves, leaf_classes, dtype=torch.int16))
        self.register_buffer("leaf_prob", torch.zeros(leaves, leaf_classes, dtype=torch.float32))
        self.register_buffer("node_count", torch.ones(trees, dtype=torch.int32))
        self.compiled: list[Any] | None = None  # scikit-learn trees rebuilt from the buffers, on first CPU use
        self.register_load_state_dict_post_hook(lambda module, _: setattr(module, "compiled", None))

    def forward(self, x: torch.Tensor, doy: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, C, T, H, W]`` standardised, ``doy [B, T]`` (unused: the features are positional) ->
        ``[B, K, H, W]`` log of the forest's class probabilities (softmax gives them back)."""
        b, c, t, h, w = x.shape
        if (c, t) != (self.in_channels, self.steps):
            raise ValueError(f"the forest was fitted on {self.in_channels} bands x {self.steps} steps, "
                             f"got {c} x {t}: a random forest needs the time grid it was trained on")
        feats = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, c * t).float()  # [N, C·T], feature c·T + t
        prob = torch.cat([self.probabilities(feats[i : i + CHUNK_PIXELS])
                          for i in range(0, len(feats), CHUNK_PIXELS)]) if len(feats) else \
            feats.new_zeros(0, self.num_classes)
        logp = prob.clamp_min(LOG_FLOOR).log()  # [N, K]
        return logp.reshape(b, h, w, -1).permute(0, 3, 1, 2)

    def probabilities(self, feats: torch.Tensor, compiled: bool = True) -> torch.Tensor:
        """``[N, F]`` features -> ``[N, K]`` mean of the trees' leaf distributions; ``compiled=False``
        forces the torch traversal."""
        rows = self.leaf_rows_compiled(feats) if compiled and feats.device.type == "cpu" else None
        if rows is None:
            rows = self.leaf_rows(feats)
        out = feats.new_zeros(len(feats), self.num_classes)
        out.scatter_add_(1, self.leaf_class[rows].reshape(len(feats), -1).long(),
                         self.leaf_prob[rows].reshape(len(feats), -1))
        return out / self.feature.shape[0]

    def leaf_rows(self, feats: torch.Tensor) -> torch.Tensor:
        """``[N, F]`` -> ``[N, trees]`` the leaf-table row each tree sends each pixel to (torch traversal)."""
        n_trees, nodes = self.feature.shape
        offset = torch.arange(n_trees, device=feats.device, dtype=torch.int64) * nodes  # [n]
        feature, threshold = self.feature.reshape(-1).long(), self.threshold.reshape(-1)
        left, right = self.left.reshape(-1).long(), self.right.reshape(-1).long()
        node = offset.expand(len(feats), n_trees).clone()  # [N, n] flat node index, every tree at its root
        for _ in range(self.depth):
            lo = left[node]
            at_leaf = lo < 0
            if bool(at_leaf.all()):
                break
            go_left = feats.gather(1, feature[node]) <= threshold[node]
            node = torch.where(at_leaf, node, torch.where(go_left, lo + offset, right[node] + offset))
        return right[node]

    def leaf_rows_compiled(self, feats: torch.Tensor) -> torch.Tensor | None:
        """The same rows by scikit-learn's compiled ``Tree.apply`` on threads; None without scikit-learn."""
        trees = self.compiled_trees()
        if trees is None:
            return None
        x = np.ascontiguousarray(feats.detach().numpy(), dtype=np.float32)
        right = self.right.numpy()
        with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:  # apply releases the GIL
            leaves = list(pool.map(lambda t: t.apply(x), trees))
        return torch.from_numpy(np.stack([right[i, leaf] for i, leaf in enumerate(leaves)], axis=1).astype(np.int64))

    def compiled_trees(self) -> list[Any] | None:
        if self.compiled is None:
            try:
                self.compiled = sklearn_trees(self)
            except Exception as e:  # no scikit-learn, or one whose Tree records differ: the torch path serves
                log.debug("random forest: torch traversal (%s: %s)", type(e).__name__, e)
                self.compiled = []
        return self.compiled or None


def sklearn_trees(forest: RandomForest) -> list[Any]:
    """scikit-learn ``Tree`` objects with the forest's nodes, for their compiled ``apply`` (leaf ids only,
    so each gets a one-value output table). The node records are filled field by field from the buffers
    into scikit-learn's own record type, which keeps this working when that type gains fields."""
    from sklearn.tree._tree import NODE_DTYPE, Tree

    n_features = forest.in_channels * forest.steps
    out = []
    for i, n in enumerate(forest.node_count.tolist()):
        nodes = np.zeros(n, dtype=NODE_DTYPE)
        left = forest.left[i, :n].numpy().astype(np.int64)
        leaf = left < 0
        nodes["left_child"] = left
        nodes["right_child"] = np.where(leaf, -1, forest.right[i, :n].numpy())
        nodes["feature"] = np.where(leaf, -2, forest.feature[i, :n].numpy())
        nodes["threshold"] = np.where(leaf, -2.0, forest.threshold[i, :n].numpy().astype(np.float64))
        tree = Tree(n_features, np.array([1], dtype=np.intp), 1)
        tree.__setstate__({"max_depth": forest.depth, "node_count": n, "nodes": nodes,
                           "values": np.zeros((n, 1, 1), dtype=np.float64)})
        out.append(tree)
    return out


def forest_tensors(estimators: list[Any], classes: np.ndarray) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Fitted scikit-learn decision trees -> (state dict, builder sizes) of :class:`RandomForest`.

    Reads only the trees' public ``tree_`` arrays (no scikit-learn import here); ``classes`` maps each
    tree's output column to a class index (a forest fitted on a subset of the classes has fewer columns).
    """
    trees = [e.tree_ for e in estimators]
    nodes = max(t.node_count for t in trees)
    values = [t.value[:, 0, :] for t in trees]
    leaf_k = max(int((v[t.children_left == -1] > 0).sum(axis=1).max()) for v, t in zip(values, trees))
    n_leaves = sum(int((t.children_left == -1).sum()) for t in trees)
    feature = np.zeros((len(trees), nodes), np.int16)
    threshold = np.zeros((len(trees), nodes), np.float32)
    left = np.full((len(trees), nodes), -1, np.int32)
    right = np.zeros((len(trees), nodes), np.int32)
    leaf_class = np.zeros((n_leaves, leaf_k), np.int16)
    leaf_prob = np.zeros((n_leaves, leaf_k), np.float32)
    row = 0
    for i, (t, v) in enumerate(zip(trees, values)):
        n = t.node_count
        leaf = t.children_left == -1
        thr = t.threshold.astype(np.float64)
        t32 = thr.astype(np.float32)
        t32 = np.where(t32.astype(np.float64) > thr, np.nextafter(t32, np.float32(-np.inf)), t32)
        feature[i, :n] = np.where(leaf, 0, t.feature)
        threshold[i, :n] = np.where(leaf, 0, t32)
        left[i, :n] = np.where(leaf, -1, t.children_left)
        rows = row + np.arange(int(leaf.sum()))
        right[i, :n] = t.children_right
        right[i, :n][leaf] = rows
        share = v[leaf] / v[leaf].sum(axis=1, keepdims=True)  # counts (older scikit-learn) or shares
        top = np.argsort(-share, axis=1, kind="stable")[:, :leaf_k]
        leaf_class[rows] = classes[top]
        leaf_prob[rows] = np.take_along_axis(share, top, axis=1)
        row += len(rows)
    depth = max(int(t.max_depth) for t in trees)
    node_count = np.array([t.node_count for t in trees], np.int32)
    state = {k: torch.from_numpy(a) for k, a in dict(feature=feature, threshold=threshold, left=left, right=right,
                                                       leaf_class=leaf_class, leaf_prob=leaf_prob,
                                                       node_count=node_count).items()}
    return state, {"trees": len(trees), "nodes": nodes, "leaves": n_leaves, "leaf_classes": leaf_k, "depth": depth}


@register("rf")
def random_forest(in_channels: int, num_classes: int, steps: int = 1, trees: int = 1, nodes: int = 1,
                  leaves: int = 1, leaf_classes: int = 1, depth: int = 0) -> nn.Module:
    """The random-forest baseline, fitted by ``cropmap train --model rf`` (not by gradient descent); the
    sizes come from the fitted trees (``forest_tensors``), the defaults give an empty one-leaf forest."""
    return RandomForest(in_channels, num_classes, steps, trees, nodes, leaves, leaf_classes, depth)
