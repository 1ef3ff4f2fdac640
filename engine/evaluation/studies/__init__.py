"""Quality studies: the one-off sweeps, probes and converters behind the figures and choices in docs/, each run
as ``python -m facecast.engine.evaluation.studies.<name> --help``. Not on the runtime path, like the rest of
evaluation (tests/test_import_graph.py); they may import training and evaluation code. Speed and cost
measurements are in ``facecast.streaming.benchmark``.

- ``a2l_phone_features``: how much phone labels (pocketsphinx) and the mel tell about the mouth opening (issue 9).
- ``bundle_size``: an old avatar bundle against the same avatar saved now (frames video): size, load time, PSNR.
- ``compare_face_landmarks``: dlib against MediaPipe's face mesh, 68 points, on clips and portraits.
- ``enroll_gain_rule``: the A2L motion-gain rules of enrolment compared in the personal protocol.
- ``enroll_thresholds``: the figures behind enrolment's bad-input thresholds, on ../shared/data/clips.
- ``portrait_mouth_sheet``: one portrait's mouths under one speech clip, several models side by side.
- ``render_fidelity``: does the picture open as far as A2L asks, on any one avatar.
- ``warp_source_sweep``: the settings of ``warp.pick_sources`` (which frame the warp takes its lower face from).
- ``whisper_a2l_variant``: a model folder whose A2L hears Whisper features, ready for ``facecast train a2l``.
- ``whisper_encoder``: Whisper tiny.en's encoder converted from CTranslate2's model.bin, and checked against it.
"""
