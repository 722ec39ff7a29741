"""Shared helpers of CEKD-PyTorch: data, edge labels, augmentation, losses, metrics, pictures, checkpoints, training."""
