"""HQ's web console (``kiosk hq web``): fleet, alerts, enrolment, members, audit and accounts,
on HQ's own services, so that a page and the ``kiosk hq`` command that do the same thing call
the same function."""
