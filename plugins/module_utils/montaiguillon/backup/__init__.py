"""MySQL backups in named parts.

settings, ids, manifest, catalog, retention, pipeline, pacing, take, restore, binlogs, offsite, drill, cli.
"""
