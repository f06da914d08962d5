"""The one keystoneauth1 boundary: the transport, the error mapping,
the Glance and block-storage clients.

Private: import the public names from :mod:`volume_image`.
"""
