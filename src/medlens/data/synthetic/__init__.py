"""Procedural synthetic data sets written as real files in the real layouts.

Why: the demo, the tests and the benchmarks of every workflow need data that looks and
is laid out like the public sets (Kaggle IDC, blood-smear leukaemia studies, ISIC) but
can be generated anywhere in seconds, deterministically, with a ``difficulty`` knob
(0 = trivially separable, 1 = almost no signal) that controls how hard the task is.

Every generator takes ``root`` (an empty or new folder) plus keyword options, writes the
files and returns ``root`` as a :class:`~pathlib.Path`. The same ``seed`` writes
byte-identical files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medlens.data.synthetic.blood import make_blood_like
from medlens.data.synthetic.brain import make_brain_mri_like
from medlens.data.synthetic.chest_ct import make_chest_ct_like
from medlens.data.synthetic.dermoscopy import make_dermoscopy_like
from medlens.data.synthetic.histology import make_idc_like
from medlens.options import look_up_option

#: Synthetic data set kind → generator. ``"brain"`` writes segmentation data (TIFF slices
#: in ``kaggle_3m``, or NIfTI volumes with ``fmt="nifti"``/``"nnunet"``).
GENERATORS: dict[str, Callable[..., Path]] = {
    "idc": make_idc_like,
    "blood": make_blood_like,
    "dermoscopy": make_dermoscopy_like,
    "brain": make_brain_mri_like,
    "chest_ct": make_chest_ct_like,
}


def make_dataset(kind: str, root: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write the synthetic data set ``kind`` (see :data:`GENERATORS`) into ``root``.

    Raises:
        ConfigError: ``kind`` is unknown (with the closest valid names).
    """
    name = look_up_option(kind, GENERATORS, what="synthetic data set kind")
    return GENERATORS[name](root, **kwargs)


__all__ = ["GENERATORS", "make_blood_like", "make_brain_mri_like", "make_dataset", "make_dermoscopy_like",
           "make_idc_like"]
