"""Database tables and repositories, Kafka and HTTP clients."""
