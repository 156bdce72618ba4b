"""Detector families: one output decoder per file."""
