"""Amaranth HDL components of the int8 inference accelerator."""
