"""The OPC UA server: one object per station (last result, counters, health, the Inspect method) for
PLCs and MES, with signed and encrypted channels, user names and trusted client certificates.

Nothing here imports asyncua at package import: `part.OpcUaPart` imports the server only when
opcua.enabled (asyncua is the `opcua` extra).
"""
