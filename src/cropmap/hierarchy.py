"""The label hierarchy (crop, group, coarse) as model heads: labels per level, one head per level on a
shared trunk, the summed loss, and the rule that makes the levels' predictions agree (Turkoglu et al. 2021).

A hierarchical model is any registered model built with ``num_classes = sum of the level sizes``: its
final 1x1 convolution is then exactly one 1x1 head per level on the shared features, and its logits
``[B, K_crop + K_group + K_coarse, H, W]`` are split by level, finest first.

Consistency rule (joint path, soft): a finest class scores the sum of its own and its ancestors' head
log-probabilities, ``log p_crop(c) + log p_group(group(c)) + log p_coarse(coarse(c))``, renormalised over
the finest classes (the product rule ``p(child) ∝ p_child(child) · p_parent(parent(child))``, down the
whole chain; with level weights ``w_l``, from ``--level-weights``, the score is ``Σ w_l log p_l``, a
product of tempered heads); a coarser class gets the best score among its descendants (a max-marginal), renormalised.
So the predicted crop is the most probable crop → group → coarse path under all heads, its group is the
predicted group and that group's coarse class the predicted coarse class: every head has a say, and the
finest confidence is lowered where the coarser heads doubt. Summing the children's probabilities
instead (a sum-marginal) was not chosen: its argmax parent can differ from the argmax child's parent (a
likely parent with many children splits its mass), which the rule must rule out. Greedy top-down
decoding (coarse argmax first, then its children only) was tried and dropped: coarse-head errors can
never be undone by a confident crop head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .errors import CropmapError
from .models import build_model
from .nomenclature import IGNORE_INDEX, ClassTable, coarser_levels


@dataclass(frozen=True)
class Hierarchy:
    """``levels`` finest first (the dataset's level), ``names[l]`` the classes of level ``l`` and
    ``finest[l - 1][i]`` the class of level ``l`` that contains finest class ``i``.

    Each coarser level is a partition of the finest classes; the levels need not nest. The RPG's coarse
    classes are set per crop code (winter and spring wheat share a group but not a coarse class), so the
    group and coarse levels of a crop table are two partitions of the crops, not a chain; the consistency
    rule only needs each level's map from the finest classes.
    """

    levels: tuple[str, ...]
    names: tuple[tuple[str, ...], ...]
    finest: tuple[tuple[int, ...], ...]
    # each level's weight in the joint-path score, finest first (() = 1 each): a run trained with
    # --level-weights scores paths with the same weights, so a head the loss weighs little counts little
    weights: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.weights and (len(self.weights) != len(self.levels) or any(w < 0 for w in self.weights)):
            raise ValueError(f"hierarchy weights {self.weights}: one number >= 0 per level expected")
        if len(self.levels) < 2 or len(self.names) != len(self.levels) or len(self.finest) != len(self.levels) - 1:
            raise ValueError("a hierarchy has at least two levels, the names of each and a map from the finest to each")
        for lv, (m, names) in enumerate(zip(self.finest, self.names[1:]), start=1):
            if len(m) != len(self.names[0]) or any(not 0 <= p < len(names) for p in m):
                raise ValueError(f"hierarchy: the map of level {self.levels[lv]} does not fit its classes")

    @classmethod
    def from_parents(cls, levels: tuple[str, ...], names: tuple[tuple[str, ...], ...],
                     parent: tuple[tuple[int, ...], ...]) -> Hierarchy:
        """Nested levels: ``parent[l][i]`` the class of level ``l + 1`` containing class ``i`` of level ``l``."""
        if len(parent) != len(levels) - 1:
            raise ValueError("a parent map between each two levels expected")
        maps, cur = [], list(range(len(names[0])))
        for par in parent:
            if any(not 0 <= c < len(par) for c in cur):
                raise ValueError("hierarchy: a parent map does not fit its classes")
            cur = [par[c] for c in cur]
            maps.append(tuple(cur))
        return cls(tuple(levels), tuple(tuple(n) for n in names), tuple(maps))

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(n) for n in self.names)

    @property
    def total(self) -> int:
        """Output channels of the model: one per class of every level."""
        return sum(self.sizes)

    def of_finest(self) -> list[list[int]]:
        """``[l][i]``: the class of level ``l`` of finest class ``i`` (the identity at level 0)."""
        return [list(range(self.sizes[0]))] + [list(m) for m in self.finest]

    @classmethod
    def from_table(cls, table: ClassTable, levels: Sequence[str] | None = None) -> Hierarchy:
        """The hierarchy of a dataset's class table over ``levels`` (default: its level and every coarser
        one, see ``nomenclature.coarser_levels``); the first level must be the table's own."""
        available = coarser_levels(table)
        levels = tuple(levels) if levels else tuple(available)
        unknown = [lv for lv in levels if lv not in available]
        if unknown or levels[0] != table.level or len(set(levels)) != len(levels):
            raise CropmapError(f"hierarchy levels {', '.join(levels)}: expected the dataset's level "
                               f"{table.level} first, then some of {', '.join(list(available)[1:]) or 'none'}")
        if len(levels) < 2:
            raise CropmapError(f"hierarchy: the {table.level} level has no coarser level to add a head for")
        names = tuple(available[lv][0] for lv in levels)
        # available[lv][1] [K_finest, K_lv] sends each finest class to its class at lv
        maps = tuple(tuple(int(c) for c in available[lv][1].argmax(axis=1)) for lv in levels[1:])
        return cls(levels, names, maps)

    def to_dict(self) -> dict:
        """Plain lists and strings, so a checkpoint holding it still loads with ``weights_only=True``."""
        return {"levels": list(self.levels), "names": [list(n) for n in self.names],
                "finest": [list(m) for m in self.finest], "weights": [float(w) for w in self.weights]}

    @classmethod
    def from_dict(cls, d: dict) -> Hierarchy:
        levels, names = tuple(d["levels"]), tuple(tuple(n) for n in d["names"])
        if "finest" not in d:  # checkpoints from before the per-code coarse level stored nested parent maps
            return cls.from_parents(levels, names, tuple(tuple(p) for p in d["parent"]))
        return cls(levels, names, tuple(tuple(m) for m in d["finest"]), tuple(float(w) for w in d.get("weights", ())))

    def split(self, logits: torch.Tensor) -> list[torch.Tensor]:
        """``[B, total, H, W]`` -> one ``[B, K_l, H, W]`` per level, finest first."""
        if logits.shape[1] != self.total:
            raise ValueError(f"expected {self.total} channels (levels {self.sizes}), got {logits.shape[1]}")
        return list(torch.split(logits, list(self.sizes), dim=1))

    def labels(self, y: torch.Tensor) -> list[torch.Tensor]:
        """Finest labels ``[B, H, W]`` -> the labels of every level, finest first; IGNORE_INDEX stays."""
        out = []
        for m in self.of_finest():
            lut = torch.as_tensor(m, dtype=y.dtype, device=y.device)
            out.append(torch.where(y >= 0, lut[y.clamp(min=0)], y))
        return out

    def consistent(self, logits: Sequence[torch.Tensor], all_levels: bool = True) -> list[torch.Tensor]:
        """Each level's ``[B, K_l, H, W]`` head logits -> log-probabilities under the joint-path rule (module
        docstring), finest first (only the finest with ``all_levels=False``): the argmax of level ``l``'s
        output has as parent the argmax of level ``l + 1``'s."""
        ups = self.of_finest()
        idx = [torch.as_tensor(m, device=logits[0].device) for m in ups]
        weights = self.weights or (1.0,) * len(self.levels)
        # [B, K_0, H, W]: each finest class's path score, summed (weighted) over the levels
        score = sum(w * torch.log_softmax(z.float(), dim=1).index_select(1, i) for z, i, w in zip(logits, idx, weights))
        out = [torch.log_softmax(score, dim=1)]
        if all_levels:
            for i, k in zip(idx[1:], self.sizes[1:]):
                best = score.new_full((score.shape[0], k, *score.shape[2:]), float("-inf"))
                best = best.scatter_reduce(1, i.view(1, -1, 1, 1).expand_as(score), score, reduce="amax")
                out.append(torch.log_softmax(best, dim=1))
        return out


class HierarchicalModel(nn.Module):
    """A registered model with one head per level: ``x [B, C, T, H, W]``, ``doy [B, T]``, ``mask [B, T]``
    -> the finest level's consistent log-probabilities ``[B, K_finest, H, W]``, so that predict, export
    and evaluate use it as a flat model."""

    def __init__(self, model: nn.Module, hierarchy: Hierarchy) -> None:
        super().__init__()
        self.model = model
        self.hierarchy = hierarchy

    def forward_levels(self, x: torch.Tensor, doy: torch.Tensor, mask: torch.Tensor | None = None
                       ) -> dict[str, torch.Tensor]:
        """Each head's raw logits ``{level: [B, K_l, H, W]}``, finest first."""
        return dict(zip(self.hierarchy.levels, self.hierarchy.split(self.model(x, doy, mask))))

    def forward(self, x: torch.Tensor, doy: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.hierarchy.consistent(list(self.forward_levels(x, doy, mask).values()), all_levels=False)[0]


def build_network(name: str, *, in_channels: int, num_classes: int, hierarchy: Hierarchy | None = None,
                  **kwargs) -> nn.Module:
    """The one place a model is built (training, checkpoints): the registered model ``name`` with one output
    channel per class, or per class of every level of ``hierarchy`` (its raw logits, to train or to load
    weights into; :func:`for_inference` gives what predict and evaluate run)."""
    return build_model(name, in_channels=in_channels, num_classes=hierarchy.total if hierarchy else num_classes,
                       **kwargs)


def for_inference(network: nn.Module, hierarchy: Hierarchy | None) -> nn.Module:
    """``network`` in eval mode, wrapped in :class:`HierarchicalModel` when it has one head per level."""
    return (HierarchicalModel(network, hierarchy) if hierarchy is not None else network).eval()


def build_hierarchical(name: str, *, in_channels: int, hierarchy: Hierarchy, **kwargs) -> HierarchicalModel:
    """The registered model ``name`` with ``hierarchy.total`` output channels, wrapped."""
    return HierarchicalModel(build_network(name, in_channels=in_channels, num_classes=hierarchy.total,
                                           hierarchy=hierarchy, **kwargs), hierarchy)


class HierarchicalLoss(nn.Module):
    """Weighted sum over levels of a per-level loss (default cross-entropy, IGNORE_INDEX skipped) of the raw
    logits ``[B, total, H, W]`` against the finest labels ``[B, H, W]`` mapped to each level; ``weights``
    finest first (default 1 each; ms-convSTAR weighs crop, group, coarse 1, 0.5, 0.1)."""

    def __init__(self, hierarchy: Hierarchy, losses: Sequence[nn.Module] | None = None,
                 weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.hierarchy = hierarchy
        if losses is not None and len(losses) != len(hierarchy.levels):
            raise ValueError(f"one loss per level expected ({len(hierarchy.levels)}), got {len(losses)}")
        if weights is not None and len(weights) != len(hierarchy.levels):
            raise ValueError(f"one weight per level expected ({len(hierarchy.levels)}), got {len(weights)}")
        self.losses = nn.ModuleList(losses if losses is not None else
                                    [nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX) for _ in hierarchy.levels])
        self.weights = tuple(float(w) for w in weights) if weights is not None else (1.0,) * len(hierarchy.levels)

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        parts = zip(self.weights, self.losses, self.hierarchy.split(logits), self.hierarchy.labels(y))
        return sum(w * loss(z, t) for w, loss, z, t in parts)  # type: ignore[return-value]


def level_counts(hierarchy: Hierarchy, counts: Sequence[int]) -> list[list[int]]:
    """Finest pixel counts per class ``[K]`` -> the counts of every level (for per-level class weights)."""
    out = []
    for m, k in zip(hierarchy.of_finest(), hierarchy.sizes):
        c = [0] * k
        for f, n in zip(m, counts):
            c[f] += int(n)
        out.append(c)
    return out
