"""Reading, encoding and batching customer-service dialogue data."""
