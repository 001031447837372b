"""Code both containers use: configuration, dataset, model store layout, image preprocessing."""
