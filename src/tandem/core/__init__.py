"""The pure core: no HTTP, database or terminal. Time is always an argument."""
