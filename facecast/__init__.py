"""facecast: a real-time streaming talking-head avatar engine.

The code lives in the repository's top-level folders, installed as sub-packages:
``engine`` -> ``facecast.engine``, ``export`` -> ``facecast.export``, ``streaming`` -> ``facecast.streaming``.
"""

__version__ = "0.1.0"
