"""The Kafka edges of the service: decode, call the domain in ``service``, publish.

The stream consumers arrive with the stream service; the planning core is offline for now.
"""
