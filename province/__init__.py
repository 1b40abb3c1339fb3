"""province: a synthetic Gansu province that emits the 14 department feeds and their truth."""

from province.params import WorldParams
from province.run import simulate

__all__ = ["WorldParams", "simulate"]
