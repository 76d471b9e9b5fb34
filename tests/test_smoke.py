import httpx


def test_server_answers_v2_infer(server: str) -> None:
    r = httpx.post(
        f"{server}/v2/models/iris/infer",
        json={"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [0]
