"""Tooling around the product: the `callintel` command, demo recordings and `make bench`.

Nothing in the asset graph imports this package (a test checks it); it imports the product.
"""
