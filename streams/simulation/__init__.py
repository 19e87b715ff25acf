"""The scenario format and the virtual-time simulator (`anpi simulate`)."""
