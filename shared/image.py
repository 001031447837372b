"""The size of an MNIST image, defined once for the dataset checks, preprocessing, the model and the server."""

IMAGE_SIDE = 28
IMAGE_SHAPE = (IMAGE_SIDE, IMAGE_SIDE)
IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE
