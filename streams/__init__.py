"""The shells around the pure core (agents/): the LINE edge, the two runtimes, the screens, the
simulator and the tools. See README.md for the folders, ARCHITECTURE.md for how they fit."""
