"""Patient-level diagnosis from a bag of cells: multiple-instance learning (MIL).

The label belongs to the patient, not to each cell (a leukaemic patient's smear holds
normal cells too), so a cell encoder (any registered backbone) embeds every cell of a
patient and a pooling module (gated attention, Ilse et al. 2018; mean and top-k as
baselines) turns the bag into one diagnosis. The attention weights say which cells drove it.

Modules follow the data's path: :mod:`~medlens.mil.config` (the run config),
:mod:`~medlens.mil.bags` (a patient's cells, decoded once into a uint8 cache),
:mod:`~medlens.mil.model` (encoder + pooling, registered as the ``mil`` network),
:mod:`~medlens.mil.train` (patient-grouped split, the shared engine, evaluation, package),
:mod:`~medlens.mil.predict` (the package's predictor and ``medlens evaluate``),
:mod:`~medlens.mil.report` (the HTML report with each patient's top-attention cells).
"""
