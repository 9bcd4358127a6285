"""The lung-CT nodule pipeline in one import: detect, diagnose, train, evaluate.

The pieces live in cohesive modules; this module gathers their public names so callers
(``medlens.tasks.ct``, ``medlens.cli.ct``, tests, benchmarks) have one stable place to import from:

* :mod:`medlens.ct.detect` — :class:`Detector` (one scan → findings), :func:`diagnose`;
* :mod:`medlens.ct.dataset` — a LUNA16-style folder (:func:`load_ct_data`, :func:`split_scans`);
* :mod:`medlens.ct.fitting` — :func:`train_pipeline` (the networks, ranker, threshold);
* :mod:`medlens.ct.packaging` — the package and its model card (also after recalibration);
* :mod:`medlens.ct.evaluation` — :func:`detect_files` and :func:`evaluate_package` on files.
"""

from __future__ import annotations

from medlens.ct.dataset import CtData, load_ct_data, split_scans
from medlens.ct.detect import (
    DIAGNOSIS_COLUMNS,
    DIAGNOSIS_RULE,
    STAGES,
    Detector,
    DetectParams,
    detect,
    diagnose,
    reported,
    scan_stem,
    seriesuid_of,
    write_diagnosis_csv,
)
from medlens.ct.evaluation import (
    detect_files,
    evaluate_package,
    expand_scan_inputs,
    froc_of,
    operating_point,
    write_report,
)
from medlens.ct.fitting import train_pipeline
from medlens.ct.froc import choose_threshold
from medlens.ct.packaging import model_card

__all__ = ["DIAGNOSIS_COLUMNS", "DIAGNOSIS_RULE", "STAGES", "CtData", "DetectParams", "Detector", "choose_threshold",
           "detect", "detect_files", "diagnose", "evaluate_package", "expand_scan_inputs", "froc_of",
           "load_ct_data", "model_card", "operating_point", "reported", "scan_stem", "seriesuid_of", "split_scans", "train_pipeline",
           "write_diagnosis_csv", "write_report"]
