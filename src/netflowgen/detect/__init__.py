"""Early DDoS detection (SPEC 9-12): EarlyDetect data, the SAFE survival head and loss, fine-tuning,
metrics with bounded overhead, and the baselines (learned and operator)."""
