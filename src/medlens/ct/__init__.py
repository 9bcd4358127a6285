"""Lung-CT nodule detection: read CT, lung mask, candidates, nodule and malignancy models,
FROC evaluation and report (issue 13). Submodules are imported where used."""
