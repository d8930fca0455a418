"""Ingestion of device exports into the bronze tables: Apple Health, Fitbit Fitabase, Google Fit.

:mod:`jobs.ingest.apple_health` and :mod:`jobs.ingest.fitbit` read the files as a stream of raw
record batches and turn them into step-sample rows (with the shared pieces of
:mod:`jobs.ingest.common`); :mod:`jobs.ingest.run` commits them to the lake.
"""
