"""partial_brier: macro Brier score on known labels only (hf_cft).

Loaded with ``evaluate.load(hf_cft.metrics.PARTIAL_BRIER_PATH)``; the implementation is
:class:`hf_cft.metrics.evaluate_modules.DecisionMetric` (imported as a module: see there why).
"""

import hf_cft.metrics.evaluate_modules as shared


class PartialBrier(shared.DecisionMetric):
    KIND = "brier"
