"""The GPT traffic decoder (SPEC 7-8)."""

from netflowgen.model.gpt import MODEL_CONFIGS, ModelConfig, TrafficGPT, model_config, next_minute_loss

__all__ = ["MODEL_CONFIGS", "ModelConfig", "TrafficGPT", "model_config", "next_minute_loss"]
