"""The GAN: StyleGAN2 networks, ADA augmentation, losses, training loop, dataset, checkpoints."""
