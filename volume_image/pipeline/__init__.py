"""The upload pipeline: the Uploader and its steps.

Private: import the public names from :mod:`volume_image`.
"""
