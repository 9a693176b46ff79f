"""The ``rmflow`` command line: drives the Prefect flows and the rmcore library."""
