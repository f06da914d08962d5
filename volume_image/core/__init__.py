"""The pure core: parsing and checking, no I/O.

Private: import the public names from :mod:`volume_image`.
"""
