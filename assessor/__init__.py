"""The assessor: answers queries over the stored readings and events."""
