"""Hydra's configs, installed as the package `csft.conf` (`pkg://csft.conf`)."""
