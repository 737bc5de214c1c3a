"""Venues an execution node trades through: the interface, and the paper venue."""

from .base import Order, OrderStatus, OrderUpdate, Venue
from .paper import PaperConfig, PaperVenue

__all__ = ["Order", "OrderStatus", "OrderUpdate", "PaperConfig", "PaperVenue", "Venue"]
