"""Everything that turns audio + avatar into frames, in the order the data flows: ``audio`` (log-mel features;
``whisper`` and ``speaker`` for the other audio encoders) -> A2L, ``models/a2l.py``, predicts the mouth and jaw
landmarks -> ``landmarks`` (heatmaps) and ``warp`` (the avatar's own mouth moved to them) -> ``sampler`` (L2V's DDIM
loop, ``models/l2v.py``) -> ``latents`` (decoding) -> ``mouth_prior`` and ``crop`` (the mouth interior, pasting the
crop back). ``pipeline`` runs them as a streaming session, ``batching`` batches many sessions' model calls,
``generate`` writes a file. Beside them: ``avatar/`` (preparing an avatar, face detection, enrolled bundles),
``training/`` (datasets, training, enrolment) and ``evaluation/`` (``facecast eval``), neither on the runtime path."""
