"""Trainers of the learned encoders; importing this package has no side effects.

Audio: ``python -m encoders.training.audio_mae --help`` and ``python -m encoders.training.musicclip --help``; from
code, ``train(cfg)`` of :mod:`encoders.training.audio_mae` (:class:`AudioMAETrainConfig`) and
:mod:`encoders.training.musicclip` (:class:`MusicCLIPTrainConfig`). Image-text: :mod:`encoders.training.flava`.
"""
