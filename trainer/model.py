"""The two model recipes (MODEL_RECIPE): the reference CNN of the Keras MNIST example, unchanged
(`seed`), and a well-known stronger one (`improved`, docs/training.md).

`improved` is the usual small-CNN recipe for MNIST: batch normalisation after every convolution,
light augmentation (random shifts of up to 2 pixels, Keras' RandomTranslation layer, see `RandomShift`) and a one-cycle
learning rate (a linear warm-up then a cosine decay: Keras' CosineDecay with `warmup_target`). The
augmentation layer only trains: the model that is published, exported to ONNX and served is the
same network without it (`build_model(..., augment=False)`, which receives the trained weights), so
both recipes keep the same contract, 28x28x1 in, 10 softmax probabilities out.
"""

from __future__ import annotations

import keras

from shared.image import IMAGE_SHAPE

INPUT_SHAPE = (*IMAGE_SHAPE, 1)  # one grey channel
NUM_CLASSES = 10
SEED = "seed"
IMPROVED = "improved"
# Shifts of up to 2 of 28 pixels, as the well-known MNIST recipes use; zeros (the background) fill in.
SHIFT_FRACTION = 2 / 28
PEAK_LEARNING_RATE = 3e-3  # Adam's one-cycle peak
WARMUP_FRACTION = 0.2  # of all steps, rising from PEAK / 10
# Keras' default 0.99 leaves the moving statistics near their start after a short run on a slice.
BATCH_NORM_MOMENTUM = 0.9


class RandomShift(keras.layers.RandomTranslation):
    """Keras' RandomTranslation, compiled into the training step under JAX.

    Keras marks the layer `supports_jit = False` (TensorFlow's XLA has no kernel for its image
    transform), and one such layer makes Keras run the whole model's steps eagerly: on JAX every
    step was traced again and hundreds of small programs compiled (issue 27). JAX compiles its own
    affine transform fine, so there the layer joins the compiled step; under TensorFlow nothing
    changes (CPU graphs are not XLA-compiled).
    """

    def __init__(self, factor: float, **kwargs: object) -> None:
        super().__init__(factor, factor, fill_mode="constant", **kwargs)
        self.supports_jit = keras.backend.backend() == "jax"


def _seed_layers(policy: dict[str, str]) -> list[keras.layers.Layer]:
    return [
        keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu", **policy),
        keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu", **policy),
        keras.layers.MaxPooling2D(pool_size=(2, 2), **policy),
        keras.layers.Dropout(0.25, **policy),
        keras.layers.Flatten(**policy),
        keras.layers.Dense(128, activation="relu", **policy),
        keras.layers.Dropout(0.5, **policy),
    ]


def _improved_layers(policy: dict[str, str]) -> list[keras.layers.Layer]:
    def convolution(filters: int) -> list[keras.layers.Layer]:
        # No bias: the batch normalisation that follows has its own offset.
        return [keras.layers.Conv2D(filters, kernel_size=(3, 3), use_bias=False, **policy),
                keras.layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM, **policy), keras.layers.ReLU(**policy)]

    return [
        *convolution(32), *convolution(32), keras.layers.MaxPooling2D(pool_size=(2, 2), **policy),
        *convolution(64), *convolution(64), keras.layers.MaxPooling2D(pool_size=(2, 2), **policy),
        keras.layers.Flatten(**policy),
        keras.layers.Dense(128, use_bias=False, **policy),
        keras.layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM, **policy), keras.layers.ReLU(**policy),
        keras.layers.Dropout(0.25, **policy),
    ]


def _optimizer(recipe: str, total_steps: int) -> keras.optimizers.Optimizer:
    if recipe == SEED:
        return keras.optimizers.RMSprop()
    warmup = max(1, int(total_steps * WARMUP_FRACTION))
    schedule = keras.optimizers.schedules.CosineDecay(
        PEAK_LEARNING_RATE / 10, decay_steps=max(1, total_steps - warmup), alpha=0.01,
        warmup_target=PEAK_LEARNING_RATE, warmup_steps=warmup)
    return keras.optimizers.Adam(learning_rate=schedule)


def optimizer_name(recipe: str) -> str:
    """How the metadata names the recipe's optimizer and learning rate."""
    return "rmsprop" if recipe == SEED else f"adam, one-cycle learning rate (peak {PEAK_LEARNING_RATE})"


def build_model(dtype_policy: str = "float32", recipe: str = SEED, total_steps: int = 0,
                augment: bool = True) -> keras.Model:
    """The compiled model of `recipe`; `dtype_policy="mixed_bfloat16"` computes in bfloat16.

    `total_steps`: the training steps of the whole run, which the improved recipe's learning-rate
    schedule spans. `augment=False` leaves the improved recipe's augmentation layer out (the model
    that is published); it has no weights, so weights move between the two with `set_weights`.

    The output layer stays float32 under any policy, as Keras' mixed-precision guide advises,
    so the softmax and the loss are computed at full precision. The weights are float32 under
    every policy, so they move between policies with `set_weights`.
    """
    if recipe not in (SEED, IMPROVED):
        raise ValueError(f"unknown model recipe {recipe!r}")
    policy = {"dtype": dtype_policy}
    layers = [keras.Input(shape=INPUT_SHAPE, name="image")]
    if recipe == IMPROVED:
        if augment:
            layers.append(RandomShift(SHIFT_FRACTION, name="augment"))
        layers += _improved_layers(policy)
    else:
        layers += _seed_layers(policy)
    layers.append(keras.layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32"))
    model = keras.Sequential(layers, name="mnist_cnn" if recipe == SEED else "mnist_cnn_improved")
    # The mean over the images that carry weight: a padded last batch (trainer/train.py) weighs its
    # padding 0, so it neither counts nor dilutes the others.
    loss = keras.losses.CategoricalCrossentropy(reduction="mean_with_sample_weight")
    # weighted_metrics: Keras applies sample weights only to these, not to `metrics`.
    model.compile(loss=loss, optimizer=_optimizer(recipe, total_steps), weighted_metrics=["accuracy"])
    return model
