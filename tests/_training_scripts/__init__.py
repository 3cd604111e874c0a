"""Helpers that run parts of the test suite in fresh interpreters (Keras fixes its backend at
import, so each Keras backend needs a process of its own)."""
