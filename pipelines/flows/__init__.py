"""Prefect flows: tasks of a few lines over :mod:`pipelines.services`; flow bodies only sequence
tasks. No flow module imports another one: what two flows share is a service."""
