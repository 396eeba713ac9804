"""The benchmark of issue 7: our stack side by side with plain Dramatiq (`python -m bench.run`)."""
