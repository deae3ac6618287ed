"""Engines that run the core's shard tasks elsewhere (above the core: the core never imports Ray)."""
