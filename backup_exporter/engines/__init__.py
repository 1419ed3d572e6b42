"""Dump engines: produce a gzip-compressed mongodump archive stream."""
