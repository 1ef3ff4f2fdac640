"""Training and enrolment: ``dataset`` (``facecast prepare-data``), ``train`` (the three networks), ``train_mouth``
(the mouth prior), ``enroll`` (fitting the model to one person) and ``latents`` (the torch side of the latents).
Not on the runtime path: the runtime imports nothing from here (tests/test_import_graph.py)."""
