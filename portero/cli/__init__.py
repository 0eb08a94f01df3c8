"""The ``portero`` command line: :mod:`.main` (parser and commands), :mod:`.migrate`, :mod:`.audit`."""
