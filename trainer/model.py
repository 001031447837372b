"""The reference CNN from the Keras MNIST example, unchanged."""

from __future__ import annotations

import keras

from shared.image import IMAGE_SHAPE

INPUT_SHAPE = (*IMAGE_SHAPE, 1)  # one grey channel
NUM_CLASSES = 10


def build_model(dtype_policy: str = "float32") -> keras.Model:
    """The compiled reference model; `dtype_policy="mixed_bfloat16"` computes in bfloat16.

    The output layer stays float32 under any policy, as Keras' mixed-precision guide advises,
    so the softmax and the loss are computed at full precision. The weights are float32 under
    every policy, so they move between policies with `set_weights`.
    """
    policy = {"dtype": dtype_policy}
    model = keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE, name="image"),
            keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu", **policy),
            keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu", **policy),
            keras.layers.MaxPooling2D(pool_size=(2, 2), **policy),
            keras.layers.Dropout(0.25, **policy),
            keras.layers.Flatten(**policy),
            keras.layers.Dense(128, activation="relu", **policy),
            keras.layers.Dropout(0.5, **policy),
            keras.layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32"),
        ],
        name="mnist_cnn",
    )
    model.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.RMSprop(), metrics=["accuracy"])
    return model
