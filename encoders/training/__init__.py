"""Trainers of the learned encoders; importing this package has no side effects.

Audio: ``thaw train audio-mae --help`` and ``thaw train musicclip --help``; from
code, ``train(cfg)`` of :mod:`encoders.training.audio_mae` (:class:`AudioMAETrainConfig`) and
:mod:`encoders.training.musicclip` (:class:`MusicCLIPTrainConfig`). Image-text: :mod:`encoders.training.flava`.

ONNX export (torch, transformers, EfficientNet-lite: the ``thaw[train]`` extra) lives here too, one module per
encoder family, so that the serving modules (:mod:`encoders.text`, :mod:`encoders.audio`,
:mod:`encoders.imagetext`) need only ONNX Runtime: :mod:`encoders.training.export_text` (MiniLM),
:mod:`encoders.training.export_audio` (Audio MAE, MusicCLIP) and :mod:`encoders.training.export_imagetext`
(frozen backbones and the three FLAVA-style graphs).
"""
