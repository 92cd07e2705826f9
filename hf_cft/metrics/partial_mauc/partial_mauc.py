"""partial_mauc: mean area under the ROC curve over categories, on known labels only (hf_cft).

Loaded with ``evaluate.load(hf_cft.metrics.PARTIAL_MAUC_PATH)``; the implementation is
:class:`hf_cft.metrics.evaluate_modules.PartialMetric` (imported as a module: see there why).
"""

import hf_cft.metrics.evaluate_modules as shared


class PartialMauc(shared.PartialMetric):
    KIND = "auroc"
