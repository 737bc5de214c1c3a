"""The Kafka edges: readers of whole topics, the output producer, partition ownership, the
order of work, the execution node and its venues, and the embedded broker. Thin: decode, call
the domain in ``service``, publish."""
