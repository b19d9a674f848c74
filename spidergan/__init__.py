"""SpiderGAN: from a community photo collection to a StyleGAN2 that draws spiders."""

__version__ = "0.1.0"
