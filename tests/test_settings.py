"""modelfn.settings without pydantic: argument > MODELFN_ variable > default, names matched case-insensitively,
values coerced as pydantic's lax mode did (a bool never taken for a number), bounds enforced, every refusal a
ValueError naming the variable or argument, the value and what was expected; models_config from JSON with each
model's overrides checked at start; `replace` validates; the API keys never shown; and no pydantic on import."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelfn.errors import ModelfnError
from modelfn.settings import Secret, Settings, SettingsError

SECRET = "k-7d1e0b42-never-shown"


@pytest.fixture(autouse=True)
def _no_modelfn_variables(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts from the defaults, whatever MODELFN_ variables this process was given."""
    for key in list(os.environ):
        if key.upper().startswith("MODELFN_"):
            monkeypatch.delenv(key)
    yield


def refusal(match: str) -> Any:
    return pytest.raises(SettingsError, match=match)


# ---- where a value comes from -----------------------------------------------------------------------------------
def test_an_argument_beats_the_environment_which_beats_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().max_batch_size == 32
    monkeypatch.setenv("MODELFN_MAX_BATCH_SIZE", "8")
    assert Settings().max_batch_size == 8
    assert Settings(max_batch_size=4).max_batch_size == 4
    monkeypatch.setenv("MODELFN_STORE", "s3://b/env")
    assert Settings(store=None).store is None  # an argument wins even when it is None
    assert Settings.load(store=None, max_batch_size=None).store == "s3://b/env"  # load ignores None arguments
    assert Settings.load(store="s3://b/arg").store == "s3://b/arg"


def test_the_environment_is_read_when_settings_are_built_not_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    before = Settings()
    monkeypatch.setenv("MODELFN_LABEL_TTL", "1.5")
    assert (before.label_ttl, Settings().label_ttl) == (30.0, 1.5)


def test_names_match_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("modelfn_Label_TTL", "2.5")
    monkeypatch.setenv("Modelfn_warmup", "off")
    settings = Settings()
    assert (settings.label_ttl, settings.warmup) == (2.5, False)


def test_unknown_variables_are_ignored_but_unknown_arguments_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFN_NO_SUCH_SETTING", "x")
    monkeypatch.setenv("MODELFN_", "x")
    monkeypatch.setenv("MODELFN_BASE_PATH", "/api")  # read by ModelFunction, not a Settings field
    assert Settings() == Settings.load()
    with refusal("max_batch_sise: no such setting"):
        Settings(max_batch_sise=8)


def test_import_reads_nothing_and_needs_no_pydantic(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import modelfn.settings as s\n"  # a bad variable is not read at import
        "assert not [m for m in sys.modules if m.split('.')[0] in ('pydantic', 'pydantic_core')], 'pydantic'\n"
        "try:\n"
        "    s.Settings()\n"
        "except s.SettingsError as e:\n"
        "    print(e)\n"
    )
    env = {**os.environ, "MODELFN_MAX_BODY_BYTES": "lots"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "MODELFN_MAX_BODY_BYTES='lots': expected an integer greater than 0"


# ---- coercion and refusal, type by type ---------------------------------------------------------------------------
@pytest.mark.parametrize(("given", "value"), [("32", 32), (" 1_000 ", 1000), ("+7", 7), ("32.0", 32), (7, 7), (7.0, 7)])
def test_integers(monkeypatch: pytest.MonkeyPatch, given: Any, value: int) -> None:
    assert Settings(max_batch_size=given).max_batch_size == value
    if isinstance(given, str):
        monkeypatch.setenv("MODELFN_MAX_BATCH_SIZE", given)
        assert Settings().max_batch_size == value


@pytest.mark.parametrize("given", [True, False, "abc", "", "3.5", 3.5, "1e3", "0x10", None, [8]])
def test_integers_refused(given: Any) -> None:
    with refusal(rf"^max_batch_size={re_escape(given)}: expected an integer at least 1$"):
        Settings(max_batch_size=given)


@pytest.mark.parametrize(
    ("given", "value"), [("2.5", 2.5), (" 3 ", 3.0), (2, 2.0), ("1e3", 1000.0), ("1_0", 10.0), ("inf", math.inf)]
)
def test_numbers(given: Any, value: float) -> None:
    ttl = Settings(label_ttl=given).label_ttl
    assert ttl == value and isinstance(ttl, float)


@pytest.mark.parametrize("given", [True, "nan", math.nan, "abc", "", None, "-1", -0.5])
def test_numbers_refused(given: Any) -> None:
    with refusal(rf"^label_ttl={re_escape(given)}: expected a number at least 0$"):
        Settings(label_ttl=given)


TRUE = ["true", "TRUE", "True", "yes", "Yes", "on", "ON", "t", "T", "y", "Y", "1", 1, True]
FALSE = ["false", "FALSE", "no", "No", "off", "Off", "f", "F", "n", "N", "0", 0, False]


@pytest.mark.parametrize(("given", "value"), [(s, True) for s in TRUE] + [(s, False) for s in FALSE])
def test_booleans(monkeypatch: pytest.MonkeyPatch, given: Any, value: bool) -> None:
    assert Settings(batching=given).batching is value
    monkeypatch.setenv("MODELFN_BATCHING", str(int(given)) if isinstance(given, int) else given)
    assert Settings().batching is value


@pytest.mark.parametrize("given", ["maybe", "", " yes", "yes ", "2", 2, -1, 0.5, "none", None])
def test_booleans_refused(monkeypatch: pytest.MonkeyPatch, given: Any) -> None:
    with refusal(rf"^batching={re_escape(given)}: expected a boolean \(true/false, 1/0, yes/no, on/off, t/f, y/n\)$"):
        Settings(batching=given)
    if isinstance(given, str):
        monkeypatch.setenv("MODELFN_BATCHING", given)
        with refusal(rf"^MODELFN_BATCHING={re_escape(given)}: expected a boolean"):
            Settings()


def test_strings_paths_and_optional_fields(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELFN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("MODELFN_VERSION", "3")
    settings = Settings(verify_key=str(tmp_path / "key.pem"))
    assert settings.cache_dir == tmp_path and isinstance(settings.cache_dir, Path)
    assert settings.verify_key == tmp_path / "key.pem"
    assert settings.version == "3"  # a string field keeps the string
    assert Settings(cache_dir=tmp_path).cache_dir == tmp_path
    assert (Settings().intra_op_threads, Settings(intra_op_threads=None).intra_op_threads) == (None, None)
    with refusal(r"^version=3: expected a string$"):
        Settings(version=3)  # as pydantic: a number is not taken for a string
    with refusal(r"^cache_dir=None: expected a path$"):
        Settings(cache_dir=None)  # not optional
    with refusal(r"^verify_key=1: expected a path$"):
        Settings(verify_key=1)


# ---- bounds ------------------------------------------------------------------------------------------------------
def test_bounds_name_the_variable_the_value_and_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFN_MAX_BODY_BYTES", "0")
    with refusal(r"^MODELFN_MAX_BODY_BYTES='0': expected an integer greater than 0$") as refused:
        Settings()
    assert isinstance(refused.value, ValueError) and isinstance(refused.value, ModelfnError)
    assert Settings(max_body_bytes=1).max_body_bytes == 1  # the argument wins, and is checked itself
    with refusal(r"^max_body_bytes=-1: expected an integer greater than 0$"):
        Settings(max_body_bytes=-1)
    monkeypatch.delenv("MODELFN_MAX_BODY_BYTES")
    with refusal(r"^max_json_depth=513: expected an integer at least 1 and at most 512$"):
        Settings(max_json_depth=513)
    with refusal(r"^capture_percent=100.5: expected a number at least 0 and at most 100$"):
        Settings(capture_percent=100.5)
    with refusal(r"^grpc_port=0: expected an integer at least 1 and at most 65535$"):
        Settings(grpc_port=0)
    with refusal(r"^max_loaded_mb=0: expected a number greater than 0$"):
        Settings(max_loaded_mb=0)
    edges = Settings(max_json_depth=512, capture_percent=0, grpc_port=65535, max_loaded_mb=0.001, cuda_device=0)
    assert (edges.max_json_depth, edges.capture_percent, edges.grpc_port) == (512, 0.0, 65535)


def test_every_problem_is_said_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFN_WARMUP", "perhaps")
    with refusal(
        r"^MODELFN_WARMUP='perhaps': expected a boolean .*; max_batch_size=0: expected an integer at least 1$"
    ):
        Settings(max_batch_size=0)


def test_a_long_bad_value_is_shortened(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFN_MAX_BODY_BYTES", "x" * 5000)
    with pytest.raises(SettingsError) as refused:
        Settings()
    assert len(str(refused.value)) < 200 and "...: expected an integer" in str(refused.value)


# ---- models_config ----------------------------------------------------------------------------------------------
def test_models_config_from_json_and_for_model(monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"mlp": {"batching": "yes", "max_batch_size": "4", "providers": "CUDAExecutionProvider"}}
    monkeypatch.setenv("MODELFN_MODELS_CONFIG", json.dumps(config))
    monkeypatch.setenv("MODELFN_MAX_BATCH_WAIT_MS", "5")
    settings = Settings(cuda_device=1)
    assert settings.models_config == {
        "mlp": {"batching": True, "max_batch_size": 4, "providers": "CUDAExecutionProvider"}
    }
    mlp = settings.for_model("mlp")
    assert (mlp.batching, mlp.max_batch_size, mlp.provider_list) == (True, 4, ["CUDAExecutionProvider"])
    assert (mlp.max_batch_wait_ms, mlp.cuda_device) == (5.0, 1)  # everything else as the settings it came from
    assert (settings.batching, settings.max_batch_size) == (False, 32)  # the settings themselves unchanged
    assert settings.for_model("iris") is settings


def test_models_config_bad_json_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFN_MODELS_CONFIG", '{"mlp": {batching: true}}')
    with refusal(r"""^MODELFN_MODELS_CONFIG='\{"mlp": \{batching: true\}\}': expected a JSON object \(Expecting"""):
        Settings()
    for shape in ("[1]", '{"mlp": true}', '"mlp"', '{"mlp": [1]}'):
        monkeypatch.setenv("MODELFN_MODELS_CONFIG", shape)
        with refusal(r"^MODELFN_MODELS_CONFIG=.*: expected a JSON object of objects"):
            Settings()


def test_a_bad_override_stops_the_start_not_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFN_MODELS_CONFIG", json.dumps({"mlp": {"cuda_device": "one", "batchng": True}}))
    with refusal(
        r"^MODELFN_MODELS_CONFIG\['mlp'\]\['cuda_device'\]='one': expected an integer at least 0; "
        r"MODELFN_MODELS_CONFIG\['mlp'\]\['batchng'\]: no such setting$"
    ):
        Settings()
    with refusal(r"^models_config\['mlp'\]\['max_json_depth'\]=0: expected an integer at least 1"):
        Settings(models_config={"mlp": {"max_json_depth": 0}})


def test_models_config_is_a_coerced_copy() -> None:
    config: dict[str, dict[str, Any]] = {"mlp": {"batching": True}, "iris": {"batching": "false", "api_keys": SECRET}}
    settings = Settings(models_config=config)
    config["mlp"]["batching"] = False
    assert settings.for_model("mlp").batching is True
    assert settings.models_config["iris"]["batching"] is False  # what reads the dict itself (the batcher) sees False
    assert SECRET not in repr(settings)


# ---- replace ------------------------------------------------------------------------------------------------------
def test_replace_validates_and_copies(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = Settings(max_batch_size=8)
    monkeypatch.setenv("MODELFN_LABEL_TTL", "1")  # set after: a copy does not read the environment again
    copy = settings.replace(cache_dir=str(tmp_path), batching="on")
    assert (copy.cache_dir, copy.batching, copy.max_batch_size, copy.label_ttl) == (tmp_path, True, 8, 30.0)
    assert (settings.cache_dir, settings.batching) == (Path("/tmp/modelfn"), False)
    with refusal(r"^max_batch_size=0: expected an integer at least 1$"):
        settings.replace(max_batch_size=0)
    with refusal(r"^batchng: no such setting$"):
        settings.replace(batchng=True)
    with refusal(r"^models_config\['m'\]\['label_ttl'\]='soon': expected a number"):
        settings.replace(models_config={"m": {"label_ttl": "soon"}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.max_batch_size = 0  # type: ignore[misc]
    assert settings.replace() == settings


# ---- the API keys --------------------------------------------------------------------------------------------------
def test_the_api_keys_are_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    for settings in (Settings(api_keys=SECRET), Settings(api_keys=Secret(SECRET))):
        assert settings.api_keys is not None and settings.api_keys.get_secret_value() == SECRET
        shown = [repr(settings), str(settings), f"{settings}", json.dumps(vars(settings), default=str)]
        shown += [json.dumps(dataclasses.asdict(settings), default=str), repr(settings.replace(batching=True))]
        assert not [text for text in shown if SECRET in text]
    monkeypatch.setenv("MODELFN_API_KEYS", SECRET)
    from_env = Settings()
    assert from_env.api_keys is not None and from_env.api_keys.get_secret_value() == SECRET
    assert SECRET not in repr(from_env)
    assert not Settings(api_keys="").api_keys  # an empty variable: no keys
    with pytest.raises(SettingsError) as refused:
        Settings(api_keys=[SECRET])
    assert str(refused.value) == "api_keys (not shown): expected a string"


# ---- what a CLI user sees -------------------------------------------------------------------------------------------
def test_a_bad_variable_is_one_line_from_the_cli_serve_and_the_container(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from modelfn_tools.cli import main
    from modelfn_tools.serve import serve

    from modelfn import container

    monkeypatch.setenv("MODELFN_MAX_BODY_BYTES", "6MB")
    said = "MODELFN_MAX_BODY_BYTES='6MB': expected an integer greater than 0"
    assert main(["models", "--store", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"modelfn models: {said}"
    assert serve(str(tmp_path), None, "127.0.0.1", 0) == 1
    assert capsys.readouterr().err.strip() == f"modelfn serve: {said}"
    assert container.serve(container.ServerConfig(store=str(tmp_path), models=None)) == 2
    assert capsys.readouterr().err.strip() == f"modelfn.container: {said}"


def re_escape(value: Any) -> str:
    """The repr a refusal shows, as a regular expression."""
    return re.escape(repr(value))
