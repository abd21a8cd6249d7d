"""Hypothesis strategies and a stateful harness for testing loops and callbacks (grows with the API)."""
