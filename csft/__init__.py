"""csft: fine-tune BERT-family encoders on customer-service language tasks."""

__version__ = "0.1.0"
