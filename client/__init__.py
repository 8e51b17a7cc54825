"""The client side: the Python SDK and the ``mydfs`` command line."""
