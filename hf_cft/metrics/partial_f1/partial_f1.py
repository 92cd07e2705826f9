"""partial_f1: macro F1 at per-category thresholds on known labels only (hf_cft).

Loaded with ``evaluate.load(hf_cft.metrics.PARTIAL_F1_PATH)``; the implementation is
:class:`hf_cft.metrics.evaluate_modules.DecisionMetric` (imported as a module: see there why).
"""

import hf_cft.metrics.evaluate_modules as shared


class PartialF1(shared.DecisionMetric):
    KIND = "f1"
