"""Thin Prefect tasks around rmcore: paths and digests in, paths and digests out.

Only this layer (and flows/) knows Prefect and MLflow.
"""
