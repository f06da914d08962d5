"""Running inside Cinder's volume service.

:mod:`volume_image.cinder.driver` is imported by cinder-volume when a
backend's ``volume_driver`` names it; it needs Cinder's environment and is
never imported by the rest of the package.
"""
