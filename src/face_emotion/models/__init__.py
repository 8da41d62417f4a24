"""Networks (a small backbone registry) and the self-describing model file format."""
