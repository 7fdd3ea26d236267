"""The encoder + head LightningModule and its parts."""
