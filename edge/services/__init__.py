"""Use cases of the member center, one function per intent, each one transaction."""
