"""The ``gdlseg`` console command."""
