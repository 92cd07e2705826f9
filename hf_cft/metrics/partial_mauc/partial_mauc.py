"""partial_mauc: mean area under the ROC curve over categories, on known labels only (hf_cft)."""

import datasets
import evaluate

from hf_cft.metrics.core import compute_partial_metric

_DESCRIPTION = """
Macro mean of per-category AUROC computed on known labels only. References are label codes
(1 positive, 0 negative, -1 unknown); categories without a known positive and a known negative are excluded
and counted. Ties are handled as scikit-learn's roc_auc_score does. Options: `categories` (a subset,
by index or name with `category_names`), `groups` (groups by known-label
count, ordered by `known_counts` when given).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: N x C scores.
    references: N x C label codes (1, 0, -1 unknown).
    categories: optional subset of categories (indices or names).
    category_names: optional C names in order.
    groups: optional number of groups by known-label count (OpenImages: 5).
    known_counts: optional per-category known-label counts ordering the groups (default: counted here).
    pair_categories, num_categories: the sparse form: predictions and references are then one score and one
        label (1 / 0) per known pair, pair_categories its category index, num_categories C (no N x C array).
Returns:
    mauc, n_categories, n_excluded, per_category, and G1..Gk when groups is set.
"""

_CITATION = """
@article{cft2024,
  title={Category-wise Fine-Tuning: Resisting Incorrect Pseudo-Labels in Multi-Label Image Classification
         with Partial Labels},
  year={2024},
  eprint={2401.16991},
  archivePrefix={arXiv}
}
"""


class PartialMauc(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("float64")),
                        "references": datasets.Sequence(datasets.Value("int8")),
                    }
                ),
                datasets.Features(  # sparse form: one known pair per entry (with pair_categories)
                    {
                        "predictions": datasets.Value("float64"),
                        "references": datasets.Value("int8"),
                    }
                ),
            ],
        )

    def _compute(self, predictions, references, categories=None, category_names=None, groups=None,
                 known_counts=None, pair_categories=None, num_categories=None):
        return compute_partial_metric("auroc", predictions, references, categories, category_names, groups,
                                      known_counts, pair_categories, num_categories)
