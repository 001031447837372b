"""Training job: download MNIST, train the reference CNN, publish a verified model version."""
