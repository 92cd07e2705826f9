"""partial_ece: macro expected calibration error on known labels only (hf_cft).

Loaded with ``evaluate.load(hf_cft.metrics.PARTIAL_ECE_PATH)``; the implementation is
:class:`hf_cft.metrics.evaluate_modules.DecisionMetric` (imported as a module: see there why).
"""

import hf_cft.metrics.evaluate_modules as shared


class PartialECE(shared.DecisionMetric):
    KIND = "ece"
