"""Prediction without TensorFlow: numpy and Pillow only (the ONNX predictor comes with `catsdogs export`).

`load_pixels` gives, for any photo, the pixels that training feeds the model
(`images.clean_image_bytes`, then `images.decode_and_resize`), without importing
TensorFlow or Keras. Nothing in this package may import either: a test blocks
both imports and loads a photo.
"""

from catsdogs.runtime.preprocess import load_pixels, resize_bilinear_antialiased, resize_to_uint8

__all__ = ["load_pixels", "resize_bilinear_antialiased", "resize_to_uint8"]
