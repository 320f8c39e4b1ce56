"""Random augmentation of image batches inside the tf.data pipeline.

Every random draw is stateless and comes from an explicit seed, so the same
seed gives the same augmented batch in every run, and parallel pipelines stay
reproducible. Flip, rotation, zoom and translation are one affine warp per
image (one resampling, not four); contrast and brightness follow the
behaviour of the Keras layers of the same names on a 0..255 pixel range.
"""

import math

import tensorflow as tf


def augment_batch(images, seed, *, flip=True, rotation=0.0, zoom=0.0, translation=0.0, contrast=0.0, brightness=0.0):
    """Augment a batch of images with the given strengths.

    Args:
        images: float32 tensor (batch, height, width, 3) with pixels in 0..255.
        seed: int tensor of shape (2,), e.g. from `tf.data.Dataset.random`.
        flip: random horizontal flip with probability one half.
        rotation: largest rotation as a fraction of a full turn (0.1 = 36 degrees).
        zoom: largest zoom in or out as a fraction of the size (0.1 = 10%).
        translation: largest shift as a fraction of the height and width.
        contrast: contrast factor drawn from [1 - contrast, 1 + contrast].
        brightness: brightness shift drawn from +-brightness * 255.

    Returns:
        A float32 tensor of the same shape, pixels clipped to 0..255.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    batch_size = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=7)

    def uniform(index, low, high):
        return tf.random.stateless_uniform([batch_size], seeds[index], minval=low, maxval=high)

    if flip or rotation or zoom or translation:
        height = tf.cast(tf.shape(images)[1], tf.float32)
        width = tf.cast(tf.shape(images)[2], tf.float32)
        flip_sign = tf.where(uniform(0, 0.0, 1.0) < 0.5, -1.0, 1.0) if flip else tf.ones([batch_size])
        angle = uniform(1, -rotation * 2 * math.pi, rotation * 2 * math.pi)
        # A scale above 1 samples a larger area of the input: the picture zooms out.
        scale = uniform(2, 1.0 - zoom, 1.0 + zoom)
        shift_x = uniform(3, -translation, translation) * width
        shift_y = uniform(4, -translation, translation) * height
        transforms = _affine_transforms(flip_sign, angle, scale, shift_x, shift_y, height, width)
        images = tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=transforms,
            output_shape=tf.shape(images)[1:3],
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="REFLECT",
        )
    if contrast:
        factor = tf.reshape(uniform(5, 1.0 - contrast, 1.0 + contrast), [-1, 1, 1, 1])
        mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
        images = (images - mean) * factor + mean
    if brightness:
        delta = uniform(6, -brightness * 255.0, brightness * 255.0)
        images = images + tf.reshape(delta, [-1, 1, 1, 1])
    return tf.clip_by_value(images, 0.0, 255.0)


def _affine_transforms(flip_sign, angle, scale, shift_x, shift_y, height, width):
    """Build ImageProjectiveTransform rows mapping output pixels to input pixels.

    The warp is about the image centre: input = centre + scale * R(angle) * F * (output - centre) - shift,
    where F mirrors x when `flip_sign` is -1.
    """
    center_x = (width - 1.0) / 2.0
    center_y = (height - 1.0) / 2.0
    cos = tf.cos(angle) * scale
    sin = tf.sin(angle) * scale
    a0 = cos * flip_sign
    a1 = -sin
    b0 = sin * flip_sign
    b1 = cos
    a2 = center_x - a0 * center_x - a1 * center_y - shift_x
    b2 = center_y - b0 * center_x - b1 * center_y - shift_y
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
