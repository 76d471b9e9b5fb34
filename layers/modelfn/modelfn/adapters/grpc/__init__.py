"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, what `tritonclient.grpc` and KServe
clients speak), beside the HTTP API on `modelfn serve --grpc-port N` and the container (MODELFN_GRPC_PORT).

- `server.py`: the gRPC server (grpcio's asyncio server) and uvicorn with it on one event loop.
- `translate.py`: messages to and from the service's v2 form; the service does the work.
- `oip.proto`: the protocol's messages; `oip_pb2.py` / `oip_pb2.pyi` are generated from it and committed, so that
  installing modelfn needs no protobuf compiler (grpcio-tools also pins a protobuf that tritonclient's excludes).
  After editing the proto, regenerate from `layers/modelfn` (protobuf 6.31 gencode runs on protobuf 6.31 and later):

      pip install grpcio-tools==1.76.0   # in a scratch virtual environment
      python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. modelfn/adapters/grpc/oip.proto

Server extra only (grpcio, protobuf): never imported by the Lambda layer's code paths.
"""
