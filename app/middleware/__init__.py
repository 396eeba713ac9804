"""Our Dramatiq middleware: one class per module, one concern per hook."""
