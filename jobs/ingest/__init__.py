"""Ingestion of device exports into the bronze tables (today: Apple Health).

:mod:`jobs.ingest.apple_health` reads the files as a stream of raw record batches and turns them
into step-sample rows; :mod:`jobs.ingest.run` commits them to the lake.
"""
