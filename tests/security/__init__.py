"""The service against brokers that ask for TLS and SASL (Apache Kafka only)."""
