"""Azure IoT Edge integration: the module client, twin and direct methods."""
