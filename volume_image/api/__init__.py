"""The block-storage API face: the validation hook and the paste filter.

Private: import the public names from :mod:`volume_image`.
"""
