"""Baselines written as a user would write them, without modelfn: the figures run each beside modelfn.

- minimal_handler: a hand-written Lambda handler (json.loads, numpy, session.run, json.dumps), no framework.
- seed_app: FastAPI with a pydantic body model and `async def /predict`, wrapped by Mangum (the tutorials'
  pattern); its `app` also runs under uvicorn for the server figures.
- pandas_batch: read a CSV in chunks with pandas, predict each chunk, concatenate, write a CSV.
- trivial_app: a raw ASGI app answering fixed JSON: the HTTP side of a core's limit for the server figures.
- peer_kserve, peer_mlserver, peer_bentoml: the int8 MLP as each peer's guide serves a custom model (each runs in
  its own environment under bench/.peers, `make bench PEERS=1`).
"""
