"""Assembled encoder models (Audio MAE, MusicCLIP, FLAVA-style image-text)."""
