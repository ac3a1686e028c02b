"""Observing modes as plans (see nirbeam.modes.bots)."""
