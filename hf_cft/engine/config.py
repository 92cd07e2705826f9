"""`CFTConfig`: every setting of a CFT run, documented, saved as ``cft_config.json``."""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from ..atomic import write_atomic
from ..constants import CFT_CONFIG_NAME

logger = logging.getLogger(__name__)

__all__ = ["CFT_CONFIG_NAME", "CFTConfig"]

BP_LOSSES = ("asl", "wmw", "aucm")
POLICIES = ("u_ignore", "u_ones", "u_zeros")
METRICS = ("ap", "auroc")
SELECTION_RULES = ("crossfit", "strict")


@dataclass
class CFTConfig:
    """How the classifier rows are re-fitted and selected.

    Defaults are the paper's MS-COCO settings (CFT-BP: ASL γ−=4, γ+=0, clip 0.05, Adam lr 1e-4,
    up to 5000 epochs; CFT-GA: population 50, up to 5000 generations) with the reference code's early-stop
    patience of 300, and the paper's CheXpert PyGAD settings for ``variant="pygad"``.
    """

    variant: str = field(
        default="bp",
        metadata={"help": "How each row is re-fitted: 'bp' (Adam on the asymmetric loss or an AUC surrogate), 'ga' "
                  "(batched genetic algorithm maximizing `metric`), 'pygad' (the same GA problem through PyGAD), "
                  "'refit' (L2 logistic regression solved to convergence, strength chosen on the selection split) "
                  "or 'auto' (run every variant of `auto_variants`; keep per category the best on selection)."},
    )
    metric: str = field(
        default="ap",
        metadata={"help": "Per-category score used for selection and as GA fitness: 'ap' (mAP datasets such as "
                  "COCO, OpenImages) or 'auroc' (mAUC datasets such as CheXpert)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the selection hold-out and of the GA."})
    selection_fraction: float = field(
        default=0.15,
        metadata={"help": "Share of the training images held out (with `seed`) to choose each row's best version "
                  "when no selection split is given. Must be in (0, 1)."},
    )
    selection_rule: str = field(
        default="crossfit",
        metadata={"help": "How a row is chosen: 'crossfit' (default: one step and shrinkage per variant, each "
                  "category's chosen on the other categories' selection labels and its gain scored on its own, "
                  "gains pooled across categories, replaced only where the posterior chance of a gain reaches "
                  "`selection_confidence`) or 'strict' (the paper's: the best selection score if strictly higher "
                  "than the trained row's)."},
    )
    selection_metric: str | None = field(
        default=None,
        metadata={"help": "Per-category score rows are selected by (early stopping, the crossfit rule's choice and "
                  "gains): 'ap' or 'auroc'; None: 'auroc' under the crossfit rule (a pairwise statistic over "
                  "every known positive-negative pair, far less noisy than AP with a handful of known positives "
                  "per category; see docs/selection.md), `metric` under the strict rule (the paper's)."},
    )
    selection_folds: int = field(default=5, metadata={"help": "crossfit, below 3 categories: folds of each "
                                                               "category's selection labels (stratified by label)."})
    selection_alphas: list[float] = field(
        default_factory=lambda: [0.25, 0.5, 0.75, 1.0],
        metadata={"help": "crossfit: shrinkage toward the new row, w = w0 + α·(w_new − w0); α = 0 (the trained row) "
                  "is always a candidate."},
    )
    selection_bootstrap: int = field(default=200, metadata={"help": "crossfit: paired bootstrap resamples for the "
                                                                     "standard error of each gain."})
    selection_confidence: float = field(
        default=0.9,
        metadata={"help": "crossfit: replace a row only where the posterior probability that its cross-fitted gain "
                  "is positive reaches this."},
    )
    patience: int | None = field(
        default=300,
        metadata={"help": "Stop a row after this many epochs/generations without a strictly better selection "
                  "score (None or 0: never stop early)."},
    )
    # --- CFT-BP -------------------------------------------------------------------------------------------
    epochs: int = field(default=5000, metadata={"help": "bp: maximum full-batch Adam epochs."})
    lr: float = field(default=1e-4, metadata={"help": "bp: learning rate (of Adam, or of gradient descent)."})
    bp_optimizer: str = field(
        default="adam",
        metadata={"help": "bp: 'adam' (full-batch Adam, the paper's COCO setting) or 'gd' (full-batch gradient "
                  "descent, θ ← θ − lr·∇, the paper's CheXpert setting)."},
    )
    gamma_neg: float = field(default=4.0, metadata={"help": "bp: ASL focusing parameter of negatives (γ−)."})
    gamma_pos: float = field(default=0.0, metadata={"help": "bp: ASL focusing parameter of positives (γ+)."})
    clip: float = field(default=0.05, metadata={"help": "bp: ASL probability margin of negatives (0: none)."})
    bp_loss: str = field(
        default="asl",
        metadata={"help": "bp: 'asl' (asymmetric loss; γ=0, clip=0 is BCE), 'wmw' (Wilcoxon–Mann–Whitney AUC "
                  "approximation, Yan et al. 2003, p=2) or 'aucm' (AUC-M square loss, Yuan et al. 2021)."},
    )
    wmw_gamma: float = field(default=0.3, metadata={"help": "bp 'wmw': margin γ in (0, 1] on sigmoid scores."})
    aucm_margin: float = field(default=1.0, metadata={"help": "bp 'aucm': margin m on sigmoid scores."})
    # --- CFT-GA (batched) ---------------------------------------------------------------------------------
    generations: int = field(default=5000, metadata={"help": "ga: maximum generations."})
    population_size: int = field(default=50, metadata={"help": "ga: individuals per category (all start as the "
                                                                 "trained row)."})
    elitism: int = field(default=1, metadata={"help": "ga: best individuals copied unchanged to the next "
                                                      "generation."})
    crossover_rate: float = field(
        default=0.2,
        metadata={"help": "ga: uniform crossover; each gene of a child comes from its first parent with this "
                  "probability, else from the second."},
    )
    mutation_probability: float = field(default=0.5, metadata={"help": "ga: chance that a child is mutated."})
    mutation_range: float = field(
        default=0.001, metadata={"help": "ga: a mutated child gets U(-r, r) added to every gene."}
    )
    # --- PyGAD (the paper's CheXpert configuration) -------------------------------------------------------
    pygad_generations: int = field(default=500, metadata={"help": "pygad: number of generations."})
    pygad_population_size: int = field(default=30, metadata={"help": "pygad: individuals per category."})
    pygad_num_parents_mating: int = field(default=14, metadata={"help": "pygad: parents chosen by roulette."})
    pygad_keep_parents: int = field(default=10, metadata={"help": "pygad: parents kept in the next generation."})
    pygad_crossover_probability: float = field(default=0.8, metadata={"help": "pygad: 2-point crossover chance."})
    pygad_mutation_probability: float = field(default=0.02, metadata={"help": "pygad: per-gene mutation chance."})
    pygad_mutation_range: float = field(
        default=0.001, metadata={"help": "pygad: a mutated gene gets U(-r, r) added."}
    )
    # --- CFT-refit (beyond the paper) -------------------------------------------------------------------
    refit_l2: list[float] = field(
        default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0],
        metadata={"help": "refit: grid of L2 strengths λ (objective: mean weighted BCE + λ/2·||w − w_ref||²), the "
                  "trajectory the selection rule chooses from. Wide by default: the right λ scales with the "
                  "features' squared norm."},
    )
    refit_toward: str = field(
        default="zero",
        metadata={"help": "refit: regularize toward 'zero' (a logistic regression on the known labels alone; "
                  "strong λ gives the robust difference-of-means direction) or 'trained' (the trained row)."},
    )
    refit_balanced: bool = field(default=False, metadata={"help": "refit: weight positives and negatives equally."})
    refit_max_iter: int = field(default=200, metadata={"help": "refit: L-BFGS iterations at most."})
    refit_tol: float = field(default=1e-6, metadata={"help": "refit: stop when the largest gradient entry is below."})
    # --- Per-category choices -----------------------------------------------------------------------------
    auto_variants: list[str] = field(
        default_factory=lambda: ["refit", "bp"],
        metadata={"help": "auto: the variants to run; each category keeps the original row or the candidate the "
                  "selection rule prefers (crossfit: one joint choice over every variant's candidates; strict: "
                  "the best selection score)."},
    )
    uncertain_policies: list[str] | None = field(
        default=None,
        metadata={"help": "CheXpert greedy: uncertain-label policies to try per category ('u_ignore', 'u_ones', "
                  "'u_zeros'), chosen on the selection split together with the variant. Needs `uncertain_mask`."},
    )
    # --- Execution ----------------------------------------------------------------------------------------
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1'."})
    dense_threshold: float = field(
        default=0.5,
        metadata={"help": "A category whose known-label share of a split is at least this is scored as a masked "
                  "column of the shared feature matrix; below it its known rows are gathered into padded blocks "
                  "(memory grows with known pairs, never with N×C)."},
    )
    block_memory_mb: float = field(
        default=512.0,
        metadata={"help": "Memory budget of one block of categories (gathered features and candidate scores)."},
    )
    show_progress: bool = field(default=True, metadata={"help": "Show tqdm progress bars."})

    # long: one check per field, in the fields' order, each with its own message
    def __post_init__(self) -> None:
        from .variants import VARIANTS, variant_choices  # the registry imports this module

        if self.variant not in variant_choices():
            raise ValueError(f"`variant` must be one of {variant_choices()}, got {self.variant!r}")
        if self.selection_rule not in SELECTION_RULES:
            raise ValueError(f"`selection_rule` must be one of {SELECTION_RULES}, got {self.selection_rule!r}")
        if self.selection_folds < 2:
            raise ValueError(f"`selection_folds` must be >= 2, got {self.selection_folds}")
        self.selection_alphas = sorted({float(a) for a in self.selection_alphas})
        if not self.selection_alphas or self.selection_alphas[0] <= 0 or self.selection_alphas[-1] > 1:
            raise ValueError(f"`selection_alphas` must be values in (0, 1], got {self.selection_alphas}")
        if self.selection_bootstrap < 2:
            raise ValueError(f"`selection_bootstrap` must be >= 2, got {self.selection_bootstrap}")
        if not 0.5 <= self.selection_confidence < 1:
            raise ValueError(f"`selection_confidence` must be in [0.5, 1), got {self.selection_confidence}")
        if self.bp_optimizer not in ("adam", "gd"):
            raise ValueError(f"`bp_optimizer` must be 'adam' or 'gd', got {self.bp_optimizer!r}")
        if self.bp_loss not in BP_LOSSES:
            raise ValueError(f"`bp_loss` must be one of {BP_LOSSES}, got {self.bp_loss!r}")
        if self.refit_toward not in ("trained", "zero"):
            raise ValueError(f"`refit_toward` must be 'trained' or 'zero', got {self.refit_toward!r}")
        self.refit_l2 = [float(v) for v in self.refit_l2]
        if not self.refit_l2 or not all(math.isfinite(v) and v >= 0 for v in self.refit_l2):
            raise ValueError(f"`refit_l2` must be a non-empty list of finite strengths >= 0, got {self.refit_l2}")
        if self.refit_max_iter < 1 or not self.refit_tol >= 0:
            raise ValueError(f"`refit_max_iter` must be >= 1 and `refit_tol` >= 0, got {self.refit_max_iter} and "
                             f"{self.refit_tol}")
        self.auto_variants = list(self.auto_variants)
        bad = [v for v in self.auto_variants if v not in VARIANTS]
        if not self.auto_variants or bad:
            raise ValueError(f"`auto_variants` must name variants among {tuple(VARIANTS)}, got "
                             f"{self.auto_variants}")
        if self.uncertain_policies is not None:
            self.uncertain_policies = list(self.uncertain_policies)
            bad = [p for p in self.uncertain_policies if p not in POLICIES]
            if not self.uncertain_policies or bad:
                raise ValueError(f"`uncertain_policies` must name policies among {POLICIES}, got "
                                 f"{self.uncertain_policies}")
        if not 0.0 < self.wmw_gamma <= 1.0:
            raise ValueError(f"`wmw_gamma` must be in (0, 1], got {self.wmw_gamma}")
        if self.metric not in METRICS:
            raise ValueError(f"`metric` must be one of {METRICS}, got {self.metric!r}")
        if self.selection_metric is not None and self.selection_metric not in METRICS:
            raise ValueError(f"`selection_metric` must be one of {METRICS} or None, got {self.selection_metric!r}")
        if not 0.0 < self.selection_fraction < 1.0:
            raise ValueError(f"`selection_fraction` must be in (0, 1), got {self.selection_fraction}")
        if self.patience is not None and self.patience < 0:
            raise ValueError(f"`patience` must be >= 0 or None, got {self.patience}")
        for name in ("epochs", "generations", "pygad_generations"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}")
        if self.population_size < 2:
            raise ValueError(f"`population_size` must be >= 2, got {self.population_size}")
        if not 0 <= self.elitism < self.population_size:
            raise ValueError(f"`elitism` must be in [0, population_size), got {self.elitism}")
        for name in ("crossover_rate", "mutation_probability", "pygad_crossover_probability",
                     "pygad_mutation_probability", "dense_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1], got {getattr(self, name)}")
        if self.pygad_num_parents_mating < 2 or self.pygad_num_parents_mating > self.pygad_population_size:
            raise ValueError("`pygad_num_parents_mating` must be in [2, pygad_population_size]")
        if not -1 <= self.pygad_keep_parents <= self.pygad_num_parents_mating:
            raise ValueError(f"`pygad_keep_parents` must be in [-1, pygad_num_parents_mating] (-1: all of them), "
                             f"got {self.pygad_keep_parents}")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, ValueError):
                raise ValueError(f"`device` must be 'auto' or a torch device such as 'cpu', 'cuda', 'cuda:1', "
                                 f"got {self.device!r}") from None
        if self.lr <= 0:
            raise ValueError(f"`lr` must be > 0, got {self.lr}")
        if self.block_memory_mb <= 0:
            raise ValueError(f"`block_memory_mb` must be > 0, got {self.block_memory_mb}")

    @property
    def judged_by(self) -> str:
        """The metric rows are selected by: ``selection_metric``, or its rule's default."""
        if self.selection_metric is not None:
            return self.selection_metric
        return "auroc" if self.selection_rule == "crossfit" else self.metric

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CFTConfig:
        """Build from a dict; keys this version does not know are dropped with a warning."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            logger.warning("Ignoring unknown CFTConfig keys (saved by another version?): %s", ", ".join(unknown))
        data = dict(data)
        if "metric" in data and "selection_metric" not in data:  # saved before it existed: selected by `metric`
            logger.warning("this CFTConfig has no `selection_metric`: read as saved before it existed, rows selected "
                           "by `metric` (%s); set `selection_metric` (None: AUROC under the crossfit rule) to choose",
                           data["metric"])
            data["selection_metric"] = data["metric"]
        return cls(**{k: v for k, v in data.items() if k in known})

    def save_pretrained(self, directory: str | os.PathLike) -> str:
        """Write ``cft_config.json`` into ``directory`` (atomically) and return its path."""
        os.makedirs(directory, exist_ok=True)
        return write_atomic(os.path.join(directory, CFT_CONFIG_NAME), self.to_json_string())

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> CFTConfig:
        """Read a ``cft_config.json`` file, or the one inside a folder."""
        if os.path.isdir(path):
            path = os.path.join(path, CFT_CONFIG_NAME)
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))
