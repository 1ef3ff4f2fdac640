"""The live engine (``engine.LiveEngine``) and its parts: audio in (``sources``, ``mixer``, ``speech_gate``), the
model thread (``model_worker``, ``model_jobs``, ``session_runner``, ``render_policy``), the output clock (``clock``,
``ticker``, ``display``, ``compositor``, ``audio_out``, ``pace``) and who gets the frames (``outputs``)."""
