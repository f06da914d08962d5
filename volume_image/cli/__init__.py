"""The operators' face: ``volume-image`` and the ``openstack`` plugin.

Private: import the public names from :mod:`volume_image`.
"""
