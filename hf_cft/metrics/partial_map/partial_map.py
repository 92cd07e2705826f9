"""partial_map: mean average precision over categories, on known labels only (hf_cft)."""

import datasets
import evaluate

from hf_cft.metrics.core import compute_partial_metric

_DESCRIPTION = """
Macro mean of per-category average precision computed on known labels only. References are label codes
(1 positive, 0 negative, -1 unknown); categories without a known positive and a known negative are excluded
and counted. Ties are handled as scikit-learn's average_precision_score does. Options: `categories` (a subset,
by index or name with `category_names`), `groups` (e.g. 5 for the OpenImages G1-G5 groups by known-label
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
    map, n_categories, n_excluded, per_category, and G1..Gk when groups is set.
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


class PartialMap(evaluate.Metric):
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
        return compute_partial_metric("ap", predictions, references, categories, category_names, groups,
                                      known_counts, pair_categories, num_categories)
