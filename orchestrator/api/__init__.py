"""The gRPC API: a thin servicer (``api.servicer``) over the async facade, with request validation
(``api.validate``) and proto conversion (``api.convert``)."""
