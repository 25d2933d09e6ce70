"""tokenwire over gRPC: the protobuf schema (``tokenwire.proto``), its generated modules, the
event codec, the ``Tokenwire`` service on ``grpc.aio`` and the clients.

The generated modules (``tokenwire_pb2*``) are committed; ``make proto`` regenerates them and a
test fails when they are stale.
"""
