"""Chest-CT-like phantoms in Hounsfield units, with lung nodules and their truth.

Why: the lung-CT pipeline (``medlens.ct``) needs scans that look like LUNA16/LIDC chest CT
to be tested, demonstrated and benchmarked anywhere, deterministically, in seconds. The
phantoms hold what makes nodule detection hard: vessels (bright branching tubes that look
like nodules in a single axial slice — the real source of false positives; thick hilar
trunks from the mediastinum among them), airways
(dark tubes with bright walls), solid, part-solid and ground-glass nodules of 3–30 mm
(sizes in mm, so anisotropic spacing matters), some touching the pleura, and noise.

Anatomy is laid out as fractions of the field of view; nodules and vessels are sized in
mm. Arrays are ``(D, H, W)`` = ``(I, R, C)``; world coordinates are LPS mm with an
identity direction (+x patient left = columns, +y posterior = rows, +z superior = slices).

Layouts written by :func:`make_chest_ct_like`:

* ``fmt="luna16"``: ``root/subset0/<seriesuid>.mhd`` + ``.raw`` (int16 HU),
  ``root/annotations.csv`` (``seriesuid,coordX,coordY,coordZ,diameter_mm,malignancy``; the
  ``malignancy`` column — median of four simulated readers, 1–5 — is an addition LUNA16
  lacks), ``root/candidates.csv`` (``seriesuid,coordX,coordY,coordZ,class``).
* ``fmt="dicom"``: ``root/<patient_id>/<study_uid>/<series_uid>/000001.dcm …`` (stored
  values ``HU + 1024`` as unsigned 16 bit with ``RescaleIntercept -1024``; files are
  numbered from the top of the chest down, so file order is the reverse of slice position)
  plus the same ``annotations.csv`` and ``candidates.csv`` at root.

Both also write ``root/truth.json``: per scan its seriesuid, shape, spacing, origin and,
per nodule, centre (mm and voxel), diameter, kind, whether it is juxta-pleural, the four
readers' ratings, median malignancy and the LIDC label (malignant when ≥ 2 readers rated
4 or 5; ratings are drawn so that this equals "median ≥ 4").
"""


from medlens.data.synthetic.chest_ct_anatomy import AIR_HU as AIR_HU
from medlens.data.synthetic.chest_ct_anatomy import BONE_HU as BONE_HU
from medlens.data.synthetic.chest_ct_anatomy import FAT_HU as FAT_HU
from medlens.data.synthetic.chest_ct_anatomy import LUNG_HU as LUNG_HU
from medlens.data.synthetic.chest_ct_anatomy import NODULE_KINDS as NODULE_KINDS
from medlens.data.synthetic.chest_ct_anatomy import SOFT_HU as SOFT_HU
from medlens.data.synthetic.chest_ct_anatomy import VESSEL_HU as VESSEL_HU
from medlens.data.synthetic.chest_ct_anatomy import ChestCTPhantom as ChestCTPhantom
from medlens.data.synthetic.chest_ct_anatomy import PhantomNodule as PhantomNodule
from medlens.data.synthetic.chest_ct_anatomy import chest_ct_phantom as chest_ct_phantom
from medlens.data.synthetic.chest_ct_writers import FORMATS as FORMATS
from medlens.data.synthetic.chest_ct_writers import make_chest_ct_like as make_chest_ct_like
from medlens.data.synthetic.chest_ct_writers import read_truth as read_truth
