"""The baseline: the server people write first. Deliberately naive; do not improve it.

Flask, Keras `model.predict` on `request.json`, one sync gunicorn worker:

    MNIST_HOME=bench/results/tmp/home gunicorn -w 1 -k sync bench.naive_server:app

It answers the native `/predict` JSON shape so the load generator can hit both servers alike.
"""

import os
from pathlib import Path

import keras
import numpy as np
from flask import Flask, jsonify, request

store = Path(os.environ.get("MNIST_HOME", "var")) / "mnist"
latest = max(int(p.name) for p in store.iterdir() if p.name.isdigit())
model = keras.models.load_model(store / str(latest) / "model.keras")

app = Flask(__name__)


@app.get("/readyz")
def readyz():
    return "ok"


@app.post("/predict")
def predict():
    x = np.array(request.json["instances"], dtype="float32").reshape(-1, 28, 28, 1) / 255.0
    probabilities = model.predict(x)
    return jsonify(
        model_version=latest,
        predictions=[{"label": int(p.argmax()), "probabilities": p.tolist()} for p in probabilities],
    )
