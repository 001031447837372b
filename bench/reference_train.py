"""The reference: the Keras mnist_cnn notebook code, as people run it, timed per epoch.

Kept as close to the notebook as possible so the comparison is honest. The only changes:
the data comes from the shared `mnist.npz` (no network here) instead of
`mnist.load_data()` (same arrays), the optimizer is RMSprop (the project's reference
hyper-parameters), and a callback (`bench.epoch_clock`) records wall and CPU seconds per epoch.
The last stdout line is a JSON object for `bench.parts.training`.

    python -m bench.reference_train EPOCHS
"""

import json
import sys

import keras
import numpy as np
from keras import layers

from bench.common import bench_mnist, peak_rss_mib
from bench.epoch_clock import EpochClock

batch_size = 128
num_classes = 10
epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 1

# input image dimensions
img_rows, img_cols = 28, 28

# the data, split between train and test sets
with np.load(bench_mnist()[0]) as f:
    x_train, y_train = f["x_train"], f["y_train"]
    x_test, y_test = f["x_test"], f["y_test"]

x_train = x_train.reshape(x_train.shape[0], img_rows, img_cols, 1)
x_test = x_test.reshape(x_test.shape[0], img_rows, img_cols, 1)
input_shape = (img_rows, img_cols, 1)

x_train = x_train.astype("float32")
x_test = x_test.astype("float32")
x_train /= 255
x_test /= 255
print("x_train shape:", x_train.shape)
print(x_train.shape[0], "train samples")
print(x_test.shape[0], "test samples")

# convert class vectors to binary class matrices
y_train = keras.utils.to_categorical(y_train, num_classes)
y_test = keras.utils.to_categorical(y_test, num_classes)

model = keras.Sequential()
model.add(keras.Input(shape=input_shape))
model.add(layers.Conv2D(32, kernel_size=(3, 3), activation="relu"))
model.add(layers.Conv2D(64, (3, 3), activation="relu"))
model.add(layers.MaxPooling2D(pool_size=(2, 2)))
model.add(layers.Dropout(0.25))
model.add(layers.Flatten())
model.add(layers.Dense(128, activation="relu"))
model.add(layers.Dropout(0.5))
model.add(layers.Dense(num_classes, activation="softmax"))

model.compile(loss=keras.losses.categorical_crossentropy, optimizer=keras.optimizers.RMSprop(), metrics=["accuracy"])


clock = EpochClock()  # measurement only: the notebook has no callback
history = model.fit(
    x_train,
    y_train,
    batch_size=batch_size,
    epochs=epochs,
    verbose=2,
    validation_data=(x_test, y_test),
    callbacks=[clock],
)
score = model.evaluate(x_test, y_test, verbose=0)
print("Test loss:", score[0])
print("Test accuracy:", score[1])

print(
    json.dumps(
        {
            "epoch_seconds": clock.wall,
            "epoch_cpu_seconds": clock.cpu,
            "val_accuracy": history.history["val_accuracy"],
            "test_accuracy": score[1],
            "train_images": len(x_train),
            "peak_rss_mib": peak_rss_mib(),
        }
    )
)
