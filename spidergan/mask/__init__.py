"""Masking: cut the spider out of each crop (see `stage` for the stage, `grabcut` and `rembg`
for the two maskers, `base` for what a masker is)."""
