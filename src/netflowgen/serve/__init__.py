"""`netflowgen serve`: live detection from exporters to alerts, actions and metrics."""
