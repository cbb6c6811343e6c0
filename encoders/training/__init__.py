"""Trainers of the audio encoders (Audio MAE, MusicCLIP) on the rendered music21 corpus.

``python -m encoders.training.audio_mae --help`` and ``python -m encoders.training.musicclip --help``; from code,
``train(cfg)`` of :mod:`encoders.training.audio_mae` (:class:`AudioMAETrainConfig`) and
:mod:`encoders.training.musicclip` (:class:`MusicCLIPTrainConfig`). Importing this package has no side effects.
"""
