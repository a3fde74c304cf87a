"""InfluxDB storage of the gateway (writer) and the server (reader): schema, client, queries."""
