"""Training and inference data: datasets, preprocessing and its inverse, patch sampling, augmentation."""
