"""Losses for the CenterNet heads: penalty-reduced focal loss on heat, weighted L1 on boxes."""

from __future__ import annotations

from typing import Any

import tensorflow as tf


def heat_loss(target: Any, pred: Any) -> Any:
    """CenterNet focal loss (alpha 2, beta 4), normalised by the number of plates."""
    pred = tf.clip_by_value(pred, 1e-4, 1 - 1e-4)
    pos = tf.cast(tf.equal(target, 1.0), tf.float32)
    neg = 1.0 - pos
    pos_loss = -tf.math.log(pred) * tf.square(1 - pred) * pos
    neg_loss = -tf.math.log(1 - pred) * tf.square(pred) * tf.pow(1 - target, 4) * neg
    n = tf.maximum(tf.reduce_sum(pos), 1.0)
    return (tf.reduce_sum(pos_loss) + tf.reduce_sum(neg_loss)) / n


def box_loss(target: Any, weight: Any, pred: Any) -> Any:
    """L1 on ln(distance / stride), weighted by closeness to the plate centre."""
    l1 = tf.reduce_sum(tf.abs(pred - target), axis=-1, keepdims=True) * weight
    return tf.reduce_sum(l1) / tf.maximum(tf.reduce_sum(weight), 1.0)
