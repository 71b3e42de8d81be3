"""PyTorch side of the dataset: patches, normalisation, augmentation, batching."""
