"""The GAN: StyleGAN2 networks, ADA augmentation, losses, training loop, dataset, checkpoints.

CPU threads: OpenMP's default busy-waiting makes torch many times slower when the cores are
shared with other processes; a passive wait policy costs nothing when they are not. It only
takes effect if set before torch is first imported, hence here.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
