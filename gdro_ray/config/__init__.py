"""Configuration: schema dataclasses, presets and the loader (no heavy imports)."""
from gdro_ray.config.loader import ConfigError, dump_config, load_config, to_dict, validate
from gdro_ray.config.schema import Config

__all__ = ["Config", "ConfigError", "dump_config", "load_config", "to_dict", "validate"]
