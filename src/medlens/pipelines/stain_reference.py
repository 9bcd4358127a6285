"""The stain reference of a run, fitted on its training split only (so no test colour leaks
into the normalisation): shared by ``medlens train`` and every cross-validation fold."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from medlens.data.records import DatasetIndex
from medlens.pipelines.config import RunConfig

log = logging.getLogger(__name__)


#: How many training images per patient, and patients at most, the stain reference is fitted on.
STAIN_IMAGES_PER_PATIENT = 32
STAIN_MAX_PATIENTS = 64


def fit_stain(cfg: RunConfig, index: DatasetIndex, train_records: list[Any]) -> RunConfig:
    """``cfg`` with the stain reference fitted on ``train_records`` (the training split only),
    or ``cfg`` itself when stain normalisation is off or a reference is already given.

    Up to :data:`STAIN_IMAGES_PER_PATIENT` images of each of up to :data:`STAIN_MAX_PATIENTS`
    training patients (seeded draw; without patient ids, groups of that many images) are fitted
    per patient and the median taken (:func:`medlens.transforms.stain.fit_reference`).
    """
    pre = cfg.preprocess
    if pre.stain_normalize == "none" or pre.stain_reference is not None:
        return cfg
    from medlens.io.images import ImageReadError
    from medlens.transforms.stain import fit_reference

    rng = np.random.default_rng(cfg.train.seed)
    by_group: dict[str, list[Any]] = {}
    for i, r in enumerate(train_records):
        key = r.patient if r.patient is not None else f"images-{i // STAIN_IMAGES_PER_PATIENT}"
        by_group.setdefault(str(key), []).append(r)
    names = sorted(by_group)
    if len(names) > STAIN_MAX_PATIENTS:
        names = sorted(rng.choice(names, STAIN_MAX_PATIENTS, replace=False).tolist())
    groups: dict[str, list[np.ndarray]] = {}
    for name in names:
        recs = by_group[name]
        pick = rng.permutation(len(recs))[:STAIN_IMAGES_PER_PATIENT]
        imgs = []
        for j in sorted(pick.tolist()):
            try:
                imgs.append(index.read(recs[j], channels=3))
            except (ImageReadError, OSError, ValueError) as e:
                log.debug("stain reference: skipping %s: %s", recs[j].path, e)
        groups[name] = imgs
    ref = fit_reference(groups, pre.stain_normalize, seed=cfg.train.seed)
    log.info("stain reference (%s) fitted on %d training image(s) of %d patient(s)/group(s)", ref.method,
             ref.n_images, ref.n_groups)
    return cfg.model_copy(update={"preprocess": pre.model_copy(update={"stain_reference": ref})})
