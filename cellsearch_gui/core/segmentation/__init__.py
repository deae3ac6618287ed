"""Cell segmentation: classical (threshold + watershed), SAM/MobileSAM prompted by proposals, tiling."""
