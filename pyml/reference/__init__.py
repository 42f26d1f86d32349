"""Pure-Python reference implementations, straight from the textbook equations.

Slow and obvious on purpose: plain loops named after the equation's symbols, NumPy used
only as the array container. They never import a kernel or the backend registry.
"""
