"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, what `tritonclient.grpc` and KServe
clients speak) and TF Serving's `Predict`, beside the HTTP API on `modelfn serve --grpc-port N` and the container
(MODELFN_GRPC_PORT).

- `server.py`: the gRPC server (grpcio's asyncio server) and uvicorn with it on one event loop.
- `translate.py`: messages to and from the service's v2 form; the service does the work.
- `tfserving.py`: TF Serving's gRPC `PredictionService.Predict`, translated to the same v2 request.
- `oip.proto`, `tfs.proto`: the messages (written from the protocols' field names and numbers; TF Serving's need no
  TensorFlow); `*_pb2.py` / `*_pb2.pyi` are generated from them and committed, so that installing modelfn needs no
  protobuf compiler (grpcio-tools also pins a protobuf that tritonclient's excludes). After editing a proto,
  regenerate from `layers/modelfn` (protobuf 6.31 gencode runs on protobuf 6.31 and later):

      pip install grpcio-tools==1.76.0   # in a scratch virtual environment
      python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. modelfn/adapters/grpc/oip.proto \
          modelfn/adapters/grpc/tfs.proto

Server extra only (grpcio, protobuf): never imported by the Lambda layer's code paths.
"""
