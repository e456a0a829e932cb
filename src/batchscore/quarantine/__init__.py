"""Bad records: marked where they are read or encoded (rows), set aside with the chunk that met them (split),
counted against the run's budget (budget). See docs/errors.md."""
