"""The kiosk's station: its devices and the member center as the touchscreen sees it.

:mod:`edge.station.api` is all the touchscreen imports; :func:`open_center` (in
:mod:`edge.station.center`) builds the implementation over the services and the devices.
"""
