"""Everything that records or tells: the audit trail, the one ``Recorder`` every record goes
through, the daemon's metrics, the report, notifications and alerts.
"""
