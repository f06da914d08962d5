"""The ``openstack volume type store ...`` commands: a
python-openstackclient plugin (the ``osc`` extra).

:mod:`~volume_image.cli.osc.plugin` is what ``openstack`` imports at start-up
(kept light); the commands are in :mod:`~volume_image.cli.osc.v1` and are
imported only when one of them runs.
"""
